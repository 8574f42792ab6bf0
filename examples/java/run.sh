#!/usr/bin/env bash
# Run the example built by build.sh: run.sh BUNDLE HOST:PORT RESOURCE KEY=VALUE [ITEM=VALUE ...]
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
exec java -Djava.library.path="$here/build/native" -cp "$here/build/classes:$("$here/classpath.sh")" VerifyQuery "$@"
