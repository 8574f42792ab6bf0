#!/usr/bin/env bash
# The class path of the Java example: Debian's grpc-java, its Netty transport, protobuf-java
# and what they need at run time, from /usr/share/java (scripts/install_examples.sh).
jars=(
  grpc-api grpc-context grpc-core grpc-netty grpc-protobuf grpc-protobuf-lite grpc-stub
  protobuf guava perfmark-api jsr305 error_prone_annotations geronimo-annotation-1.3-spec
  netty-buffer netty-codec netty-codec-http netty-codec-http2 netty-common netty-handler
  netty-resolver netty-transport netty-tcnative
)
printf '/usr/share/java/%s.jar:' "${jars[@]}"
