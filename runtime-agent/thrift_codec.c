/* runtime-agent/thrift_codec.c - the gateway's pure Thrift codec, compiled into the
 * agent too (the Makefile links only runtime-agent/ and common/ into faas-agent). */
#include "gateway/thrift.c"
