# Root build. `make` builds every binary into $(BUILD)/; see README for the rest.
# Components are one directory each; every .c in a component directory is part of it,
# main.c is the daemon entry point and is left out of unit-test links.

BUILD    ?= build
CC       ?= cc
OPT      ?= -O2
SAN      ?=
CFLAGS   ?=
LDFLAGS  ?=
V        ?= 0
Q        := $(if $(filter 1,$(V)),,@)

PKG_GRPC  := grpc libprotobuf-c
PKG_H2O   := libh2o-evloop libnghttp2 openssl
PKG_ALL   := $(PKG_GRPC) $(PKG_H2O) sqlite3 yaml-0.1

pc_cflags = $(shell pkg-config --cflags $(1))
pc_libs   = $(shell pkg-config --libs $(1))

# The gateway overrides libc's epoll calls for its h2o loop (gateway/override_epoll.c,
# docs/performance.md); `make OVERRIDE_EPOLL=0` builds it without.
OVERRIDE_EPOLL ?= 1

BASE_CFLAGS := -std=gnu11 $(OPT) -g -Wall -Wextra -Werror -Wno-unused-parameter \
  -D_GNU_SOURCE -DH2O_USE_LIBUV=0 -DGW_OVERRIDE_EPOLL=$(OVERRIDE_EPOLL) -I. -I$(BUILD)/gen -pthread $(SAN) \
  $(call pc_cflags,$(PKG_ALL))
ALL_CFLAGS := $(BASE_CFLAGS) $(CFLAGS)
ALL_LDFLAGS := -pthread $(SAN) $(LDFLAGS)

GEN_DIR := $(BUILD)/gen
PROTO_C := $(GEN_DIR)/proto/faas.pb-c.c
PROTO_H := $(GEN_DIR)/proto/faas.pb-c.h

# ---- component object lists -------------------------------------------------
srcs_of    = $(wildcard $(1)/*.c)
objs_of    = $(patsubst %.c,$(BUILD)/obj/%.o,$(call srcs_of,$(1)))
libobjs_of = $(filter-out %/main.o,$(call objs_of,$(1)))

COMMON_OBJS := $(call objs_of,common) $(BUILD)/obj/gen/proto/faas.pb-c.o

# Protocol libraries: pure where they can be, each depending on common/ only. Their
# objects are linked into whichever binary uses them (no archives: the lists are short).
H2B_OBJS    := $(call objs_of,h2b)
THRIFT_OBJS := $(call objs_of,thrift)
HTTP1_OBJS  := $(call objs_of,http1)
GRPCW_OBJS  := $(call objs_of,grpcw)

# etcdc/: the etcd v3 client (discovery's durable store). Its messages are generated from
# the .proto files etcd publishes (Debian's golang-etcd-server-dev), never committed.
ETCD_PROTO_SRC ?= /usr/share/gocode/src/go.etcd.io/etcd
ETCD_PROTOS    := mvcc/mvccpb/kv auth/authpb/auth etcdserver/etcdserverpb/rpc
ETCD_PROTO_IN  := $(foreach p,$(ETCD_PROTOS),$(GEN_DIR)/etcdproto/etcd/$(p).proto)
ETCD_GEN_H     := $(foreach p,$(ETCD_PROTOS),$(GEN_DIR)/etcd/$(p).pb-c.h)
ETCD_GEN_OBJS  := $(foreach p,$(ETCD_PROTOS),$(BUILD)/obj/gen/etcd/$(p).pb-c.o)
ETCDC_OBJS     := $(call objs_of,etcdc) $(ETCD_GEN_OBJS)

# binary: name, main object, extra objects, pkg-config packages
BIN_discovery := $(BUILD)/faas-discovery
BIN_workermgr := $(BUILD)/faas-workermgr
BIN_agent     := $(BUILD)/faas-agent
BIN_gateway   := $(BUILD)/faas-gateway
BIN_faasctl   := $(BUILD)/faasctl
BIN_faasd     := $(BUILD)/faasd
EXAMPLES      := $(BUILD)/examples/hello-http
# Static user servers the e2e tests put into OCI images (tests/e2e/images/, issue 15)
TEST_IMAGE_SRVS := $(BUILD)/tests/images/srv $(BUILD)/tests/images/thrift_srv
DEPLOY_LIB    := $(filter-out %/faasctl.o %/faasd.o,$(call objs_of,deploy))

BINS := $(BIN_discovery) $(BIN_workermgr) $(BIN_agent) $(BIN_gateway) $(BIN_faasctl) $(BIN_faasd)

.PHONY: all deps test unit e2e run asan test-asan unit-asan fuzz bench clean format install uninstall
all: $(BINS) $(EXAMPLES) $(TEST_IMAGE_SRVS)

$(BIN_discovery): $(call objs_of,discovery) $(ETCDC_OBJS) $(COMMON_OBJS)
	@mkdir -p $(@D); echo "  LD    $@"
	$(Q)$(CC) $(ALL_LDFLAGS) -o $@ $^ $(call pc_libs,$(PKG_GRPC) sqlite3 openssl)

$(BIN_workermgr): $(call objs_of,worker-manager) $(COMMON_OBJS)
	@mkdir -p $(@D); echo "  LD    $@"
	$(Q)$(CC) $(ALL_LDFLAGS) -o $@ $^ $(call pc_libs,$(PKG_GRPC) openssl libmnl libnftables $(PKG_BPF))

# The agent lives in every pod: it links no grpc and no h2o (its loop is common/evl.c),
# and is linked statically (no ld.so work, no shared-library pages: a smaller idle pod,
# a faster exec) except under sanitizers, which cannot be static. Besides common/ it
# links protocol libraries only: the h2 bridge, the Thrift codec, HTTP/1.1 parsing and
# the gRPC wire rules.
AGENT_SHARED := $(H2B_OBJS) $(THRIFT_OBJS) $(HTTP1_OBJS) $(GRPCW_OBJS)
GATEWAY_LIBS := $(H2B_OBJS) $(THRIFT_OBJS) $(GRPCW_OBJS)
# libseccomp: the user server's filter (runtime-agent/seccomp.c); Debian ships its .a
AGENT_LIBS   := $(call pc_libs,libnghttp2 libprotobuf-c) $(shell pkg-config --static --libs libseccomp)
AGENT_STATIC := $(if $(SAN),,-static)
$(BIN_agent): $(call objs_of,runtime-agent) $(AGENT_SHARED) $(filter-out %/rpc.o %/auth.o,$(COMMON_OBJS))
	@mkdir -p $(@D); echo "  LD    $@"
	$(Q)$(CC) $(ALL_LDFLAGS) $(AGENT_STATIC) -o $@ $^ $(AGENT_LIBS)

$(BIN_gateway): $(call objs_of,gateway) $(call libobjs_of,dispatcher) $(GATEWAY_LIBS) $(COMMON_OBJS)
	@mkdir -p $(@D); echo "  LD    $@"
	$(Q)$(CC) $(ALL_LDFLAGS) -o $@ $^ $(call pc_libs,$(PKG_H2O) $(PKG_GRPC))

$(BIN_faasctl): $(BUILD)/obj/deploy/faasctl.o $(DEPLOY_LIB) $(COMMON_OBJS)
	@mkdir -p $(@D); echo "  LD    $@"
	$(Q)$(CC) $(ALL_LDFLAGS) -o $@ $^ $(call pc_libs,$(PKG_GRPC) openssl yaml-0.1)

$(BIN_faasd): $(BUILD)/obj/deploy/faasd.o $(DEPLOY_LIB) $(COMMON_OBJS)
	@mkdir -p $(@D); echo "  LD    $@"
	$(Q)$(CC) $(ALL_LDFLAGS) -o $@ $^ $(call pc_libs,$(PKG_GRPC) openssl yaml-0.1)

# The example is user code: built without sanitizers, next to its source, because
# deploying examples/hello-http uploads that directory. Replaced by rename so a
# running copy never makes the build fail with ETXTBSY.
$(BUILD)/examples/hello-http: examples/hello-http/hello
	@mkdir -p $(@D); cp $< $@
examples/hello-http/hello: examples/hello-http/hello.c
	@echo "  CC    $@"
	$(Q)$(CC) -std=gnu11 -O2 -g -Wall -Wextra -Werror -D_GNU_SOURCE -pthread -o $@.tmp $< && mv -f $@.tmp $@

# tests/e2e/test_agent_image.py: what the worker manager's root helper does for an image
# pod (a user namespace, the mounted root, the agent dropped to the pod's uid).
E2E_HELPERS := $(BUILD)/tests/userns-pod
all: $(E2E_HELPERS)
$(BUILD)/tests/userns-pod: tests/e2e/userns_pod.c
	@mkdir -p $(@D); echo "  CC    $@"
	$(Q)$(CC) -std=gnu11 -O2 -g -Wall -Wextra -Werror -D_GNU_SOURCE -o $@ $<

# User code in an image of busybox and nothing else: static, no sanitizers.
$(BUILD)/tests/images/%: tests/e2e/images/%.c
	@mkdir -p $(@D); echo "  CC    $@"
	$(Q)$(CC) -std=gnu11 -O2 -static -Wall -Wextra -Werror -Wno-unused-parameter -D_GNU_SOURCE -pthread -o $@.tmp $< \
	  && mv -f $@.tmp $@

# ---- generated protobuf code (never committed) ------------------------------
$(PROTO_C) $(PROTO_H): proto/faas.proto
	@mkdir -p $(GEN_DIR); echo "  PROTOC $<"
	$(Q)protoc-c --c_out=$(GEN_DIR) $<

# The agent's Python zygote (runtime-agent/zygote.py, issue 18) as a C string, run with
# `python3 -c`: comment lines and blank lines left out, since the user server's
# /proc/self/cmdline shows it.
ZYGOTE_PY_H := $(GEN_DIR)/runtime-agent/zygote_py.h
$(ZYGOTE_PY_H): runtime-agent/zygote.py
	@mkdir -p $(@D); echo "  GEN   $@"
	$(Q)sed -e '/^ *#/d' -e '/^ *$$/d' -e 's/\\/\\\\/g' -e 's/"/\\"/g' -e 's/^/"/' -e 's/$$/\\n"/' $< > $@.tmp && mv -f $@.tmp $@
$(BUILD)/obj/runtime-agent/user.o: $(ZYGOTE_PY_H)

# etcd's files import each other as "etcd/mvcc/mvccpb/kv.proto" and so on: they are
# copied under that layout with the Go-only options stripped (etcdc/strip-proto.awk).
$(GEN_DIR)/etcdproto/etcd/%.proto: $(ETCD_PROTO_SRC)/%.proto etcdc/strip-proto.awk
	@mkdir -p $(@D)
	$(Q)awk -f etcdc/strip-proto.awk $< > $@.tmp && mv -f $@.tmp $@

$(GEN_DIR)/etcd/%.pb-c.c $(GEN_DIR)/etcd/%.pb-c.h: $(GEN_DIR)/etcdproto/etcd/%.proto $(ETCD_PROTO_IN)
	@mkdir -p $(GEN_DIR); echo "  PROTOC $<"
	$(Q)protoc-c --c_out=$(GEN_DIR) -I$(GEN_DIR)/etcdproto $<

$(call objs_of,etcdc) $(ETCD_GEN_OBJS): $(ETCD_GEN_H)
.SECONDARY: $(ETCD_PROTO_IN)

# ---- the worker manager's run-queue probe (eBPF, CO-RE; never committed) -----------
# vmlinux.h comes from the build machine's kernel BTF and the skeleton from bpftool;
# the object is CO-RE, so it loads on other kernels with BTF. Without bpftool, clang,
# libbpf or BTF the worker manager is built without it (WM_HAVE_BPF=0) and says so.
BPFTOOL  ?= $(firstword $(shell command -v bpftool 2>/dev/null) $(wildcard /usr/sbin/bpftool))
BPF_CLANG ?= clang
HAVE_BPF ?= $(if $(and $(BPFTOOL),$(shell command -v $(BPF_CLANG) 2>/dev/null),$(wildcard /sys/kernel/btf/vmlinux),$(shell pkg-config --exists libbpf && echo y)),1,0)
PKG_BPF  := $(if $(filter 1,$(HAVE_BPF)),libbpf)
RUNQ_SKEL := $(GEN_DIR)/worker-manager/runq.skel.h

$(GEN_DIR)/bpf/vmlinux.h:
	@mkdir -p $(@D); echo "  BTF   $@"
	$(Q)$(BPFTOOL) btf dump file /sys/kernel/btf/vmlinux format c > $@.tmp && mv -f $@.tmp $@

$(GEN_DIR)/bpf/runq.bpf.o: worker-manager/bpf/runq.bpf.c worker-manager/bpf/runq.h $(GEN_DIR)/bpf/vmlinux.h
	@echo "  BPF   $<"
	$(Q)$(BPF_CLANG) -O2 -g -target bpf -D__TARGET_ARCH_x86 -I. -I$(GEN_DIR)/bpf -c -o $@ $<

# `gen object` links it as libbpf would load it, without the DWARF (a 20x smaller skeleton).
$(RUNQ_SKEL): $(GEN_DIR)/bpf/runq.bpf.o
	@mkdir -p $(@D); echo "  SKEL  $@"
	$(Q)$(BPFTOOL) gen object $(GEN_DIR)/bpf/runq.linked.o $< && \
	  $(BPFTOOL) gen skeleton $(GEN_DIR)/bpf/runq.linked.o name runq > $@.tmp && mv -f $@.tmp $@

ifeq ($(HAVE_BPF),1)
$(BUILD)/obj/worker-manager/runq.o: $(RUNQ_SKEL)
$(BUILD)/obj/worker-manager/runq.o: ALL_CFLAGS += -DWM_HAVE_BPF=1 $(call pc_cflags,libbpf)
endif

# ---- objects ------------------------------------------------------------------
$(BUILD)/obj/gen/%.o: $(GEN_DIR)/%.c
	@mkdir -p $(@D)
	$(Q)$(CC) $(ALL_CFLAGS) -Wno-error -MMD -MP -c -o $@ $<

$(BUILD)/obj/%.o: %.c $(PROTO_H)
	@mkdir -p $(@D); echo "  CC    $<"
	$(Q)$(CC) $(ALL_CFLAGS) -MMD -MP -c -o $@ $<

-include $(shell find $(BUILD)/obj -name '*.d' 2>/dev/null)

# ---- unit tests (Criterion), one runner per component -------------------------
# one per directory (tests/unit/*.h are helpers the components share)
UNIT_COMPONENTS := $(notdir $(patsubst %/,%,$(wildcard tests/unit/*/)))
UNIT_BINS := $(foreach c,$(UNIT_COMPONENTS),$(BUILD)/tests/unit-$(c))
unit_objs = $(call libobjs_of,$(if $(filter deploy,$(1)),deploy,$(1)))

define UNIT_RULE
$(BUILD)/tests/unit-$(1): $(patsubst %.c,$(BUILD)/obj/%.o,$(wildcard tests/unit/$(1)/*.c)) \
    $(filter-out %/faasctl.o %/faasd.o,$(call libobjs_of,$(1))) $(if $(filter common,$(1)),,$(COMMON_OBJS)) \
    $(if $(filter common,$(1)),$(BUILD)/obj/gen/proto/faas.pb-c.o) \
    $(if $(filter runtime-agent,$(1)),$(AGENT_SHARED)) \
    $(if $(filter gateway,$(1)),$(GATEWAY_LIBS)) \
    $(if $(filter dispatcher,$(1)),$(H2B_OBJS)) \
    $(if $(filter etcdc,$(1)),$(ETCD_GEN_OBJS)) $(if $(filter discovery,$(1)),$(ETCDC_OBJS))
	@mkdir -p $$(@D); echo "  LD    $$@"
	$(Q)$(CC) $(ALL_LDFLAGS) -o $$@ $$^ $(call pc_libs,$(PKG_ALL) criterion libmnl libnftables $(PKG_BPF)) \
	  $(if $(filter runtime-agent,$(1)),$(call pc_libs,libseccomp))
endef
$(foreach c,$(UNIT_COMPONENTS),$(eval $(call UNIT_RULE,$(c))))

unit: $(UNIT_BINS)
	@set -e; for t in $(UNIT_BINS); do echo "== $$t"; $$t --jobs=2 --short-filename; done

E2E_FLAGS ?=
e2e: all
	FAAS_BUILD="$(abspath $(BUILD))" /usr/bin/python3 -m pytest -q -p no:cacheprovider tests/e2e $(E2E_FLAGS)

deps:
	@deploy/install-deps.sh

test: deps
	$(MAKE) all
	$(MAKE) unit
	$(MAKE) e2e

run: deps
	$(MAKE) all
	deploy/run-demo.sh "$(abspath $(BUILD))"

# ---- sanitizers ---------------------------------------------------------------
ASAN_BUILD := build-asan
asan: deps
	$(MAKE) BUILD=$(ASAN_BUILD) OPT=-O1 SAN="-fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined" all $(foreach c,$(UNIT_COMPONENTS),$(ASAN_BUILD)/tests/unit-$(c))

unit-asan: asan
	$(MAKE) BUILD=$(ASAN_BUILD) OPT=-O1 SAN="-fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined" unit

e2e-asan: asan
	$(MAKE) BUILD=$(ASAN_BUILD) OPT=-O1 SAN="-fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined" e2e

# ---- fuzzing (libFuzzer via clang) ----------------------------------------------
FUZZ_BUILD := build-fuzz
FUZZ_TIME ?= 30
fuzz: deps
	tests/fuzz/run.sh $(FUZZ_TIME)

bench: deps all
	tests/bench/run.sh "$(abspath $(BUILD))"

format:
	clang-format -i $$(git ls-files '*.c' '*.h')

clean:
	rm -rf build $(ASAN_BUILD) $(FUZZ_BUILD) examples/hello-http/hello

# ---- install (docs/packaging.md) --------------------------------------------------
# `make install PREFIX=/usr DESTDIR=/tmp/root` needs no root. The agent goes next to
# faas-workermgr, where it looks by default; the units are rendered for PREFIX; the
# manifests, the env file and the TLS drop-ins are examples under share/faas, not
# config: nothing is written to /etc.
PREFIX   ?= /usr/local
DESTDIR  ?=
BINDIR   := $(PREFIX)/bin
UNITDIR  := $(PREFIX)/lib/systemd/system
SHAREDIR := $(PREFIX)/share/faas
INSTALL  ?= install
INST_BINS  := $(notdir $(BINS))
INST_UNITS := $(patsubst deploy/systemd/%.in,%,$(wildcard deploy/systemd/*.service.in))
INST_SHARE := $(wildcard deploy/systemd/faas.env deploy/systemd/tls/*.conf deploy/k8s/*.yaml deploy/k8s/Dockerfile) \
              docs/packaging.md

$(BUILD)/systemd/%.service: deploy/systemd/%.service.in FORCE
	@mkdir -p $(@D)
	$(Q)sed -e 's|@BINDIR@|$(BINDIR)|g' -e 's|@DOCDIR@|$(SHAREDIR)|g' $< > $@.tmp && mv -f $@.tmp $@

install: $(BINS) $(addprefix $(BUILD)/systemd/,$(INST_UNITS))
	$(INSTALL) -d -m 0755 $(DESTDIR)$(BINDIR) $(DESTDIR)$(UNITDIR) \
	  $(sort $(dir $(addprefix $(DESTDIR)$(SHAREDIR)/,$(patsubst deploy/%,%,$(patsubst docs/%,%,$(INST_SHARE))))))
	$(INSTALL) -m 0755 $(BINS) $(DESTDIR)$(BINDIR)/
	$(INSTALL) -m 0644 $(addprefix $(BUILD)/systemd/,$(INST_UNITS)) $(DESTDIR)$(UNITDIR)/
	$(Q)set -e; for f in $(INST_SHARE); do \
	  d=$${f#deploy/}; d=$${d#docs/}; $(INSTALL) -m 0644 $$f $(DESTDIR)$(SHAREDIR)/$$d; done

# Removes exactly what install put, and share/faas's directories; bin and the unit
# directory are shared with other packages and stay.
uninstall:
	rm -f $(addprefix $(DESTDIR)$(BINDIR)/,$(INST_BINS)) $(addprefix $(DESTDIR)$(UNITDIR)/,$(INST_UNITS))
	rm -f $(addprefix $(DESTDIR)$(SHAREDIR)/,$(patsubst deploy/%,%,$(patsubst docs/%,%,$(INST_SHARE))))
	-rmdir $(DESTDIR)$(SHAREDIR)/systemd/tls $(DESTDIR)$(SHAREDIR)/systemd $(DESTDIR)$(SHAREDIR)/k8s \
	  $(DESTDIR)$(SHAREDIR) 2>/dev/null

.PHONY: FORCE
FORCE:
