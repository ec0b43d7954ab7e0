#!/usr/bin/env bash
# Run here (with package access) before sending the tree to a GPU host that
# has none: downloads the Debian packages the build needs into .bundle/
# (git-ignored; name it in the device call's carry list).
set -euo pipefail
cd "$(dirname "$0")/.."
shared=${SHARED_DIR:-../shared}
bash "$shared/gpu-host/bundle-debs.sh" .bundle
cp "$shared/gpu-host/use-bundle.sh" .bundle/
