#!/usr/bin/env bash
# Generate the messages and the stub from proto/ and compile the example into build/.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
out="$here/build"
rm -rf "$out" && mkdir -p "$out/gen" "$out/classes"
protoc -I "$here/../../proto" -I /usr/include \
  --java_out="$out/gen" \
  --plugin=protoc-gen-grpc-java=/usr/bin/grpc_java_plugin --grpc-java_out="$out/gen" \
  govnode/v1/common.proto govnode/v1/sharing.proto
javac -nowarn -d "$out/classes" -cp "$("$here/classpath.sh")" \
  $(find "$out/gen" -name '*.java') "$here/VerifyQuery.java"
# netty-tcnative (OpenSSL for Netty: see VerifyQuery.java), copied under the name Netty loads
# (Debian installs it as libnetty-tcnative.so; the library checks its own file name, so a
# symbolic link does not do).
mkdir -p "$out/native"
cp "$(dpkg -L libnetty-tcnative-jni | grep '/libnetty-tcnative\.so$')" "$out/native/libnetty_tcnative.so"
