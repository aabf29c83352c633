#!/bin/sh
# Cargo runs every rustc call through this wrapper (see config.toml). It stops
# the build with one clear line when libtorch is missing or has the wrong
# version, before torch-sys's build script can fail with a page of C++ errors.
# Cost: one test(1) per compiled crate; the version file is read only when the
# library is present.
if [ -n "${LIBTORCH:-}" ]; then
  if [ ! -f "$LIBTORCH/lib/libtorch_cpu.so" ]; then
    echo "error: libtorch not found at $LIBTORCH: run scripts/setup.sh (it installs torch==2.11.0 from PyPI and links .libtorch)" >&2
    exit 1
  fi
  case "$(sed -n "s/^__version__ = '\(.*\)'/\1/p" "$LIBTORCH/version.py" 2>/dev/null)" in
    2.11.0|2.11.0+*) ;;
    *) echo "error: $LIBTORCH holds torch $(sed -n "s/^__version__ = '\(.*\)'/\1/p" "$LIBTORCH/version.py" 2>/dev/null || echo '(unknown)'), but tch 0.24.0 needs torch==2.11.0: re-run scripts/setup.sh" >&2
       exit 1 ;;
  esac
fi
exec "$@"
