#!/usr/bin/env bash
# Install what the agency examples in other languages need (examples/node, examples/java),
# for tests/sdk/test_examples.py:
#
#     bash scripts/install_examples.sh      (make examples; make test runs it first)
#
# - Node: node and npm from Debian when missing, then the example's pinned packages
#   (examples/node/package-lock.json) with `npm ci` into examples/node/node_modules.
# - Java: a JDK, Debian's grpc-java (libgrpc-java, with its Netty transport: libnetty-java,
#   and OpenSSL through netty-tcnative),
#   protobuf-java, protoc and protoc's grpc-java plugin; examples/java/build.sh compiles
#   against the jars in /usr/share/java. Maven Central is not needed.
#
# Idempotent: when everything is there it installs nothing and takes well under a second.
# Otherwise it runs apt-get as root, or through sudo, with `apt-get update` only when the
# package lists are missing or an install fails on stale ones.
set -euo pipefail

root="$(cd "$(dirname "$0")/.." && pwd)"

packages=()
command -v node >/dev/null 2>&1 || packages+=(nodejs)
command -v npm >/dev/null 2>&1 || packages+=(npm)
command -v javac >/dev/null 2>&1 || packages+=(default-jdk-headless)
command -v protoc >/dev/null 2>&1 || packages+=(protobuf-compiler)
# google/protobuf/timestamp.proto and the other well-known types, for protoc
[ -f /usr/include/google/protobuf/timestamp.proto ] || packages+=(libprotobuf-dev)
[ -x /usr/bin/grpc_java_plugin ] || packages+=(protobuf-compiler-grpc-java-plugin)
[ -f /usr/share/java/grpc-core.jar ] || packages+=(libgrpc-java)
[ -f /usr/share/java/protobuf.jar ] || packages+=(libprotobuf-java)
# grpc-java's Netty transport and what grpc-core needs at run time; libgrpc-java does not
# depend on them (Debian builds other packages against it).
[ -f /usr/share/java/netty-codec-http2.jar ] || packages+=(libnetty-java)
[ -f /usr/share/java/perfmark-api.jar ] || packages+=(libperfmark-java)
# OpenSSL for Netty's TLS (Debian's Netty has no ALPN with the JDK's TLS; gRPC needs ALPN)
[ -f /usr/share/java/netty-tcnative.jar ] || packages+=(libnetty-tcnative-java)
[ -f /usr/lib/x86_64-linux-gnu/jni/libnetty-tcnative.so ] || packages+=(libnetty-tcnative-jni)
# javax.annotation.Generated, which the grpc-java 1.41 plugin puts on the stub it generates
# (removed from the JDK in Java 11)
[ -f /usr/share/java/geronimo-annotation-1.3-spec.jar ] || packages+=(libgeronimo-annotation-1.3-spec-java)

if [ ${#packages[@]} -gt 0 ]; then
  if [ "$(id -u)" -eq 0 ]; then
    as_root=()
  elif command -v sudo >/dev/null 2>&1; then
    as_root=(sudo)
  else
    echo "examples: the examples need Debian packages ${packages[*]}; run this script as root" \
      "(or install them: apt-get install --no-install-recommends ${packages[*]})" >&2
    exit 1
  fi
  apt() {
    "${as_root[@]}" env DEBIAN_FRONTEND=noninteractive apt-get "$@"
  }
  install() {
    apt install --yes --quiet --no-install-recommends "${packages[@]}"
  }
  echo "examples: installing ${packages[*]} (Debian packages)"
  if [ -z "$(apt-cache policy libgrpc-java 2>/dev/null | grep -E 'Candidate: [^(]')" ]; then
    apt update --quiet
    install
  elif ! install; then
    apt update --quiet
    install
  fi
fi

# The Node example's packages, exactly as package-lock.json pins them (`npm ci`); again only
# when the lock file changed since the last install (its digest is kept in node_modules).
node_dir="$root/examples/node"
stamp="$node_dir/node_modules/.installed-lock.sha256"
want="$(sha256sum "$node_dir/package-lock.json" | cut -d' ' -f1)"
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  echo "examples: npm ci in examples/node (packages from the npm registry)"
  (cd "$node_dir" && npm ci --no-audit --no-fund --loglevel=error)
  echo "$want" >"$stamp"
fi
echo "examples: $(node --version) with $(cd "$node_dir" && node -p 'require("@grpc/grpc-js/package.json").version') grpc-js;" \
  "$(javac -version 2>&1) with grpc-java $(dpkg-query -W -f '${Version}' libgrpc-java)"
