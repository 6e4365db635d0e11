# etcdc/strip-proto.awk - makes etcd's published .proto files compile with plain
# protoc-c: drops the gogoproto and google.api imports and every option that names
# them (file options on one line, the multi-line google.api.http blocks of rpc.proto).
# Those only steer Go code generation and the HTTP gateway; the wire format is unchanged.
/^import "gogoproto\//            { next }
/^import "google\/api\//          { next }
/^[ \t]*option \(gogoproto\./      { next }
/^[ \t]*option \(google\.api\.http\)/ { skip = 1 }
skip { if ($0 ~ /};[ \t]*$/) skip = 0; next }
{ print }
