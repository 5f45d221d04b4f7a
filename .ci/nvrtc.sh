# Source this: installs the NVRTC 13 library from PyPI if needed and puts it on LD_LIBRARY_PATH.
nvrtc_dir() {
    python3 - <<'PY'
import glob, site, sys
paths = site.getsitepackages() + [site.getusersitepackages()]
for p in paths:
    hits = glob.glob(p + "/nvidia/**/libnvrtc.so.13", recursive=True)
    if hits:
        print(hits[0].rsplit("/", 1)[0]); sys.exit(0)
sys.exit(1)
PY
}
if ! dir=$(nvrtc_dir); then
    python3 -m pip install -q --disable-pip-version-check "nvidia-cuda-nvrtc==13.0.*"
    dir=$(nvrtc_dir)
fi
export LD_LIBRARY_PATH="$dir${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
echo "NVRTC: $dir"
