#!/usr/bin/env python3
"""Build the OCI test images that petri's tests and benchmarks unpack.

Why this exists: petri needs real OCI image layouts to test against (whiteouts,
opaque directories, hardlinks, setuid bits, xattrs, odd entry order) and a
realistically large image to benchmark unpacking.  Pulling from a registry is
not possible here, and hand-made tarballs drift, so every image is produced
from a recipe in this file, REPRODUCIBLY: two builds of the same recipe from
the same inputs give byte-identical blobs and therefore the same manifest
digest.  That is achieved by

  * tar entries in a fixed order (sorted, parents before children), PAX
    format, fixed mtime (SOURCE_DATE_EPOCH, default 1700000000; trees from
    disk are clamped to it), explicit uid/gid/uname/gname;
  * gzip with mtime=0, no file name and a fixed compression level (zstd via
    the zstd CLI at a fixed level and one thread);
  * JSON written with sorted keys and compact separators.

Usage:
    rootfs/build.py NAME [--out DIR] [--compression gzip|zstd|none] [--force]

NAME is one of the recipes below (busybox, debian).  The output, an OCI image
layout directory, goes to rootfs/out/NAME unless --out is given.  It is built
in a temporary directory beside the destination and renamed into place.  A
stamp file in the output records a hash of the recipe (this script, the
inputs such as the busybox binary, the compression, SOURCE_DATE_EPOCH, ...);
when it matches, the build is skipped and "up to date" is printed.

The debian recipe runs debootstrap (root only, needs the network to the apt
mirror, takes a few minutes the first time); the debootstrapped tree is cached
in rootfs/out/.cache/debian-rootfs so later builds only re-pack it.
"""

import argparse
import datetime
import gzip
import hashlib
import io
import json
import os
import platform
import re
import shutil
import stat
import subprocess
import sys
import tarfile
import tempfile
import time
import zlib

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_OUT = os.path.join(HERE, "out")
CACHE_DIR = os.path.join(DEFAULT_OUT, ".cache")
STAMP_NAME = ".petri-recipe"

GZIP_LEVEL = 6
ZSTD_LEVEL = 3

MT_INDEX = "application/vnd.oci.image.index.v1+json"
MT_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
MT_CONFIG = "application/vnd.oci.image.config.v1+json"
MT_LAYER = {
    "gzip": "application/vnd.oci.image.layer.v1.tar+gzip",
    "zstd": "application/vnd.oci.image.layer.v1.tar+zstd",
    "none": "application/vnd.oci.image.layer.v1.tar",
}

PATH_ENV = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
BUSYBOX_BIN = "/bin/busybox"


def die(msg):
    print(f"build.py: error: {msg}", file=sys.stderr)
    sys.exit(1)


def source_date_epoch():
    try:
        return int(os.environ.get("SOURCE_DATE_EPOCH", "1700000000"))
    except ValueError:
        die("SOURCE_DATE_EPOCH must be an integer")


def oci_arch():
    m = platform.machine()
    return {"x86_64": "amd64", "amd64": "amd64", "aarch64": "arm64", "arm64": "arm64"}.get(m, m)


def rfc3339(epoch):
    return datetime.datetime.fromtimestamp(epoch, tz=datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def canonical_json(obj):
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def sha256_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


# ---------------------------------------------------------------------------
# Tar writing


class HashingWriter:
    """File-like object that hashes and counts everything written through it."""

    def __init__(self, f):
        self.f = f
        self.h = hashlib.sha256()
        self.size = 0

    def write(self, b):
        self.h.update(b)
        self.size += len(b)
        return self.f.write(b)

    def tell(self):
        return self.size

    def flush(self):
        self.f.flush()


class LayerWriter:
    """Writes one uncompressed PAX tar layer, entry by entry, in call order.

    Entry order is the caller's responsibility (recipes list entries sorted,
    parents first, with deliberate exceptions that are commented)."""

    def __init__(self, path, mtime):
        self.path = path
        self.mtime = mtime
        self.raw = open(path, "wb")
        self.hw = HashingWriter(self.raw)
        self.tar = tarfile.open(fileobj=self.hw, mode="w", format=tarfile.PAX_FORMAT, encoding="utf-8")

    def _info(self, name, typ, mode, uid, gid, uname, gname, mtime=None, xattrs=None):
        ti = tarfile.TarInfo(name)
        ti.type = typ
        ti.mode = mode & 0o7777
        ti.uid, ti.gid = uid, gid
        ti.uname, ti.gname = uname, gname
        ti.mtime = int(self.mtime if mtime is None else mtime)
        if xattrs:
            ti.pax_headers = {f"SCHILY.xattr.{k}": v for k, v in sorted(xattrs.items())}
        return ti

    def dir(self, name, mode=0o755, uid=0, gid=0, uname="root", gname="root", **kw):
        self.tar.addfile(self._info(name, tarfile.DIRTYPE, mode, uid, gid, uname, gname, **kw))

    def file(self, name, data, mode=0o644, uid=0, gid=0, uname="root", gname="root", **kw):
        ti = self._info(name, tarfile.REGTYPE, mode, uid, gid, uname, gname, **kw)
        ti.size = len(data)
        self.tar.addfile(ti, io.BytesIO(data))

    def file_from(self, name, fobj, size, mode=0o644, uid=0, gid=0, uname="root", gname="root", **kw):
        ti = self._info(name, tarfile.REGTYPE, mode, uid, gid, uname, gname, **kw)
        ti.size = size
        self.tar.addfile(ti, fobj)

    def symlink(self, name, target, uid=0, gid=0, uname="root", gname="root", **kw):
        ti = self._info(name, tarfile.SYMTYPE, 0o777, uid, gid, uname, gname, **kw)
        ti.linkname = target
        self.tar.addfile(ti)

    def hardlink(self, name, target, mode=0o644, uid=0, gid=0, uname="root", gname="root", **kw):
        ti = self._info(name, tarfile.LNKTYPE, mode, uid, gid, uname, gname, **kw)
        ti.linkname = target
        self.tar.addfile(ti)

    def fifo(self, name, mode=0o644, uid=0, gid=0, uname="root", gname="root", **kw):
        self.tar.addfile(self._info(name, tarfile.FIFOTYPE, mode, uid, gid, uname, gname, **kw))

    def close(self):
        """Finish the tar; return (diff_id, size) of the uncompressed tar."""
        self.tar.close()
        self.raw.close()
        return "sha256:" + self.hw.h.hexdigest(), self.hw.size


# ---------------------------------------------------------------------------
# OCI layout writing


class Layout:
    def __init__(self, root, compression):
        self.root = root
        self.compression = compression
        self.blobs = os.path.join(root, "blobs", "sha256")
        os.makedirs(self.blobs)
        self.layers = []  # (descriptor, diff_id)

    def _put_file(self, path):
        digest = sha256_file(path)
        dst = os.path.join(self.blobs, digest)
        os.replace(path, dst)
        os.chmod(dst, 0o644)
        return "sha256:" + digest, os.path.getsize(dst)

    def put_bytes(self, data):
        digest = hashlib.sha256(data).hexdigest()
        with open(os.path.join(self.blobs, digest), "wb") as f:
            f.write(data)
        return "sha256:" + digest, len(data)

    def new_layer(self, mtime):
        fd, path = tempfile.mkstemp(prefix="layer-", suffix=".tar", dir=self.root)
        os.close(fd)
        return LayerWriter(path, mtime)

    def add_layer(self, lw):
        diff_id, _ = lw.close()
        src = lw.path
        if self.compression == "none":
            out = src
        elif self.compression == "gzip":
            out = src + ".gz"
            with open(src, "rb") as fin, open(out, "wb") as fout:
                with gzip.GzipFile(filename="", mode="wb", fileobj=fout, mtime=0, compresslevel=GZIP_LEVEL) as gz:
                    shutil.copyfileobj(fin, gz, 1 << 20)
            os.unlink(src)
        elif self.compression == "zstd":
            out = src + ".zst"
            with open(out, "wb") as fout:
                subprocess.run(["zstd", "-q", "-c", f"-{ZSTD_LEVEL}", "-T1", src], stdout=fout, check=True)
            os.unlink(src)
        else:
            raise ValueError(self.compression)
        digest, size = self._put_file(out)
        self.layers.append(({"mediaType": MT_LAYER[self.compression], "digest": digest, "size": size}, diff_id))

    def finish(self, config, history):
        epoch = source_date_epoch()
        cfg = {
            "created": rfc3339(epoch),
            "architecture": oci_arch(),
            "os": "linux",
            "config": config,
            "rootfs": {"type": "layers", "diff_ids": [d for _, d in self.layers]},
            "history": [{"created": rfc3339(epoch), "created_by": h} for h in history],
        }
        cdigest, csize = self.put_bytes(canonical_json(cfg))
        manifest = {
            "schemaVersion": 2,
            "mediaType": MT_MANIFEST,
            "config": {"mediaType": MT_CONFIG, "digest": cdigest, "size": csize},
            "layers": [d for d, _ in self.layers],
        }
        mdigest, msize = self.put_bytes(canonical_json(manifest))
        index = {
            "schemaVersion": 2,
            "mediaType": MT_INDEX,
            "manifests": [{
                "mediaType": MT_MANIFEST,
                "digest": mdigest,
                "size": msize,
                "platform": {"architecture": oci_arch(), "os": "linux"},
                "annotations": {"org.opencontainers.image.ref.name": "latest"},
            }],
        }
        with open(os.path.join(self.root, "index.json"), "wb") as f:
            f.write(canonical_json(index))
        with open(os.path.join(self.root, "oci-layout"), "wb") as f:
            f.write(canonical_json({"imageLayoutVersion": "1.0.0"}))
        return mdigest


# ---------------------------------------------------------------------------
# Recipe: busybox

PASSWD = (
    "root:x:0:0:root:/root:/bin/sh\n"
    "nobody:x:65534:65534:nobody:/nonexistent:/bin/false\n"
    "app:x:1000:1000:app:/home/app:/bin/sh\n"
)
GROUP = (
    "root:x:0:\n"
    "app:x:1000:\n"
    "staff:x:50:app\n"
    "video:x:44:app\n"
    "nogroup:x:65534:\n"
)
SUID_DEMO = b"#!/bin/sh\n# setuid demo file for petri's tests (the kernel ignores setuid on scripts)\nid\n"
APP = dict(uid=1000, gid=1000, uname="app", gname="app")


def busybox_applets():
    out = subprocess.run([BUSYBOX_BIN, "--list"], check=True, capture_output=True, text=True).stdout
    names = {n.strip() for n in out.splitlines()}
    return sorted(n for n in names if n and "/" not in n and n != "busybox")


def busybox_inputs():
    if not os.path.isfile(BUSYBOX_BIN):
        die(f"{BUSYBOX_BIN} not found (apt-get install busybox-static)")
    return [sha256_file(BUSYBOX_BIN)]


def build_busybox(layout):
    epoch = source_date_epoch()
    applets = busybox_applets()

    # --- layer 1: base filesystem -------------------------------------------
    # Entries are in sorted order (a directory's own entry sorts before its
    # children because "x/" extends "x").
    l1 = layout.new_layer(epoch)
    l1.dir("./", mode=0o755)
    entries = []  # (name, kind, args) gathered, then sorted
    entries.append(("bin/", "dir", {}))
    with open(BUSYBOX_BIN, "rb") as f:
        bb = f.read()
    entries.append(("bin/busybox", "file", {"data": bb, "mode": 0o755}))
    for a in applets:
        entries.append((f"bin/{a}", "symlink", {"target": "busybox"}))
    entries += [
        ("dev/", "dir", {}),
        ("etc/", "dir", {}),
        ("etc/group", "file", {"data": GROUP.encode()}),
        ("etc/passwd", "file", {"data": PASSWD.encode()}),
        ("etc/removed-later.txt", "file", {"data": b"this file is deleted by a whiteout in layer 2\n"}),
        ("home/", "dir", {}),
        ("home/app/", "dir", APP),
        ("opt/", "dir", {}),
        ("opt/data/", "dir", {}),
        ("opt/data/a.txt", "file", {"data": b"a: hidden by the opaque whiteout in layer 2\n"}),
        ("opt/data/b.txt", "file", {"data": b"b: hidden by the opaque whiteout in layer 2\n"}),
        ("opt/data/sub/", "dir", {}),
        ("opt/data/sub/c.txt", "file", {"data": b"c: hidden by the opaque whiteout in layer 2\n"}),
        ("proc/", "dir", {}),
        ("root/", "dir", {"mode": 0o700}),
        ("sys/", "dir", {}),
        ("tmp/", "dir", {"mode": 0o1777}),
        ("var/", "dir", {}),
        ("www/", "dir", {}),
    ]
    entries.sort(key=lambda e: e[0])
    for name, kind, args in entries:
        args = dict(args)
        if kind == "dir":
            l1.dir(name, **args)
        elif kind == "file":
            data = args.pop("data")
            l1.file(name, data, **args)
        elif kind == "symlink":
            l1.symlink(name, args.pop("target"), **args)
    layout.add_layer(l1)

    # --- layer 2: whiteouts, special files ------------------------------------
    # Parent directories are repeated with the layer-1 metadata.  The order is
    # sorted EXCEPT that opt/data/new.txt deliberately precedes the opaque
    # marker opt/data/.wh..wh..opq: an unpacker must apply the opaque
    # whiteout to the lower layers only, never to its own layer's entries,
    # whatever their order in the tar.
    l2 = layout.new_layer(epoch)
    l2.dir("bin/")
    l2.file("bin/suid-demo", SUID_DEMO, mode=0o4755)
    l2.dir("etc/")
    l2.file("etc/.wh.removed-later.txt", b"")
    l2.dir("home/")
    l2.dir("home/app/", **APP)
    l2.file("home/app/owned.txt", b"owned by app:app, mode 0640\n", mode=0o640, **APP)
    l2.dir("opt/")
    l2.dir("opt/data/")
    l2.file("opt/data/new.txt", b"new: the only file left in /opt/data\n")
    l2.file("opt/data/.wh..wh..opq", b"")  # after its sibling, on purpose
    l2.hardlink("opt/hardlink.txt", "opt/data/new.txt")
    l2.symlink("opt/link-to-data", "data/new.txt")
    l2.file("opt/xattr.txt", b"this file carries the xattr user.petri=test\n",
            xattrs={"user.petri": "test"})
    layout.add_layer(l2)

    # --- layer 3: web content -------------------------------------------------
    l3 = layout.new_layer(epoch)
    l3.dir("www/")
    l3.file("www/index.html", b"<h1>hello from petri</h1>\n")
    layout.add_layer(l3)

    config = {
        "Env": [PATH_ENV],
        "Cmd": ["sh"],
        "WorkingDir": "/",
        "ExposedPorts": {"8080/tcp": {}},
        "Labels": {"org.opencontainers.image.title": "petri busybox"},
    }
    history = [
        "petri rootfs/build.py busybox: layer 1: busybox, applet links, base directories, /etc/passwd, /etc/group",
        "petri rootfs/build.py busybox: layer 2: whiteout, opaque dir, setuid, owned file, hardlink, symlink, xattr",
        "petri rootfs/build.py busybox: layer 3: /www/index.html",
    ]
    return layout.finish(config, history)


# ---------------------------------------------------------------------------
# Recipe: debian

DEBIAN_SUITE = "bookworm"
DEBIAN_DEFAULT_MIRROR = "http://deb.debian.org/debian"
DEBIAN_CACHE = os.path.join(CACHE_DIR, "debian-rootfs")
DEBIAN_CACHE_ID = DEBIAN_CACHE + ".id"


def apt_mirror():
    """The Debian mirror this machine's apt uses (not the security one)."""
    if os.environ.get("PETRI_DEBIAN_MIRROR"):
        return os.environ["PETRI_DEBIAN_MIRROR"]
    uris = []
    d = "/etc/apt/sources.list.d"
    if os.path.isdir(d):
        for fn in sorted(os.listdir(d)):
            if not fn.endswith(".sources"):
                continue
            with open(os.path.join(d, fn), errors="replace") as f:
                for stanza in re.split(r"\n\s*\n", f.read()):
                    fields = {}
                    for line in stanza.splitlines():
                        m = re.match(r"^([A-Za-z-]+):\s*(.*)$", line)
                        if m:
                            fields[m.group(1).lower()] = m.group(2).split()
                    if "deb" in fields.get("types", []) and DEBIAN_SUITE in fields.get("suites", []):
                        uris += fields.get("uris", [])
    if os.path.isfile("/etc/apt/sources.list"):
        with open("/etc/apt/sources.list", errors="replace") as f:
            for line in f:
                parts = line.split("#", 1)[0].split()
                if len(parts) >= 3 and parts[0] == "deb":
                    rest = [p for p in parts[1:] if not p.startswith("[")]
                    if len(rest) >= 2 and rest[1] == DEBIAN_SUITE:
                        uris.append(rest[0])
    for u in uris:
        if "security" not in u:
            return u.rstrip("/")
    return DEBIAN_DEFAULT_MIRROR


def debian_ensure_tree():
    """debootstrap into the cache once; return the cache id (changes when re-bootstrapped)."""
    if os.path.isdir(DEBIAN_CACHE) and os.path.isfile(DEBIAN_CACHE_ID):
        with open(DEBIAN_CACHE_ID) as f:
            return f.read().strip()
    if os.geteuid() != 0:
        die("the debian recipe runs debootstrap, which needs root (run as root, e.g. with sudo)")
    if not shutil.which("debootstrap"):
        die("debootstrap not found (apt-get install debootstrap)")
    mirror = apt_mirror()
    os.makedirs(CACHE_DIR, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix="debian-rootfs.tmp-", dir=CACHE_DIR)
    print(f"debootstrap --variant=minbase --include=python3 {DEBIAN_SUITE} {tmp} {mirror}", flush=True)
    print("(this downloads and installs ~100 packages; it takes a few minutes)", flush=True)
    t0 = time.monotonic()
    try:
        subprocess.run(["debootstrap", "--variant=minbase", "--include=python3", DEBIAN_SUITE, tmp, mirror],
                       check=True)
    except (subprocess.CalledProcessError, KeyboardInterrupt):
        shutil.rmtree(tmp, ignore_errors=True)
        die(f"debootstrap failed (see {tmp}/debootstrap/debootstrap.log if kept)")
    if os.path.isdir(DEBIAN_CACHE):
        shutil.rmtree(DEBIAN_CACHE)
    os.chmod(tmp, 0o755)  # mkdtemp made it 0700; it becomes the image's /
    os.rename(tmp, DEBIAN_CACHE)
    cache_id = f"{DEBIAN_SUITE} {mirror} {time.time_ns()}"
    with open(DEBIAN_CACHE_ID, "w") as f:
        f.write(cache_id + "\n")
    print(f"debootstrap took {time.monotonic() - t0:.0f}s; tree cached in {DEBIAN_CACHE}", flush=True)
    return cache_id


def debian_inputs():
    return [debian_ensure_tree()]


def _read_ids(path):
    ids = {}
    try:
        with open(path, errors="replace") as f:
            for line in f:
                p = line.rstrip("\n").split(":")
                if len(p) >= 3 and p[2].isdigit():
                    ids.setdefault(int(p[2]), p[0])
    except FileNotFoundError:
        pass
    return ids


def _debian_skip(rel):
    """Paths (relative, no leading slash) dropped from the image for reproducibility."""
    if rel.startswith("dev/"):
        return True
    if re.fullmatch(r"var/cache/apt/[^/]+\.bin|var/cache/apt/archives/[^/]+\.deb", rel):
        return True
    if rel.startswith("var/lib/apt/lists/") or rel.startswith("var/log/"):
        return True
    if rel == "var/cache/ldconfig/aux-cache":
        return True
    return False


# Files kept but emptied: host- or boot-specific content.
DEBIAN_EMPTY = {"etc/machine-id", "etc/hostname", "etc/resolv.conf"}
KEPT_XATTR = re.compile(r"^(user\..*|security\.capability)$")


def build_debian(layout):
    epoch = source_date_epoch()
    root = DEBIAN_CACHE
    users = _read_ids(os.path.join(root, "etc/passwd"))
    groups = _read_ids(os.path.join(root, "etc/group"))
    lw = layout.new_layer(epoch)
    seen_inodes = {}
    skipped = 0

    def meta(st):
        return dict(uid=st.st_uid, gid=st.st_gid,
                    uname=users.get(st.st_uid, ""), gname=groups.get(st.st_gid, ""),
                    mtime=min(int(st.st_mtime), epoch))

    def xattrs(path):
        out = {}
        try:
            names = os.listxattr(path, follow_symlinks=False)
        except OSError:
            return out
        for n in sorted(names):
            if KEPT_XATTR.match(n):
                v = os.getxattr(path, n, follow_symlinks=False)
                out[n] = v.decode("utf-8", "surrogateescape")
        return out

    def walk(dirpath, rel):
        nonlocal skipped
        for name in sorted(os.listdir(dirpath)):
            path = os.path.join(dirpath, name)
            r = rel + name
            if _debian_skip(r):
                continue
            st = os.lstat(path)
            m = meta(st)
            mode = stat.S_IMODE(st.st_mode)
            if stat.S_ISDIR(st.st_mode):
                lw.dir(r + "/", mode=mode, xattrs=xattrs(path), **m)
                walk(path, r + "/")
            elif stat.S_ISLNK(st.st_mode):
                lw.symlink(r, os.readlink(path), **m)
            elif stat.S_ISREG(st.st_mode):
                if r in DEBIAN_EMPTY:
                    lw.file(r, b"", mode=mode, **m)
                    continue
                key = (st.st_dev, st.st_ino)
                if st.st_nlink > 1 and key in seen_inodes:
                    lw.hardlink(r, seen_inodes[key], mode=mode, **m)
                    continue
                if st.st_nlink > 1:
                    seen_inodes[key] = r
                with open(path, "rb") as f:
                    lw.file_from(r, f, st.st_size, mode=mode, xattrs=xattrs(path), **m)
            elif stat.S_ISFIFO(st.st_mode):
                lw.fifo(r, mode=mode, **m)
            else:  # device nodes, sockets
                skipped += 1

    st = os.lstat(root)
    lw.dir("./", mode=stat.S_IMODE(st.st_mode), **meta(st))
    walk(root, "")
    layout.add_layer(lw)
    if skipped:
        print(f"skipped {skipped} device nodes/sockets", flush=True)
    config = {"Env": [PATH_ENV], "Cmd": ["python3"], "WorkingDir": "/"}
    history = [f"petri rootfs/build.py debian: debootstrap --variant=minbase --include=python3 {DEBIAN_SUITE}"]
    return layout.finish(config, history)


RECIPES = {
    "busybox": (busybox_inputs, build_busybox),
    "debian": (debian_inputs, build_debian),
}


# ---------------------------------------------------------------------------


def recipe_hash(name, compression, inputs):
    h = hashlib.sha256()
    with open(os.path.abspath(__file__), "rb") as f:
        h.update(f.read())
    parts = [name, compression, str(source_date_epoch()), oci_arch(), zlib.ZLIB_RUNTIME_VERSION,
             "python%d.%d" % sys.version_info[:2]]
    if compression == "zstd":
        parts.append(subprocess.run(["zstd", "--version"], capture_output=True, text=True).stdout)
    for p in parts + list(inputs):
        h.update(b"\0" + p.encode())
    return h.hexdigest()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("name", choices=sorted(RECIPES))
    ap.add_argument("--out", help="output OCI layout directory (default rootfs/out/NAME)")
    ap.add_argument("--compression", choices=["gzip", "zstd", "none"], default="gzip")
    ap.add_argument("--force", action="store_true", help="rebuild even if up to date")
    args = ap.parse_args()

    if args.compression == "zstd" and not shutil.which("zstd"):
        die("zstd not found (apt-get install zstd)")
    out = os.path.abspath(args.out or os.path.join(DEFAULT_OUT, args.name))
    inputs_fn, build_fn = RECIPES[args.name]
    rhash = recipe_hash(args.name, args.compression, inputs_fn())

    stamp = os.path.join(out, STAMP_NAME)
    if not args.force and os.path.isfile(stamp):
        with open(stamp) as f:
            if f.read().strip() == rhash:
                print(f"{args.name}: up to date ({out})")
                return

    parent = os.path.dirname(out)
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=f".{os.path.basename(out)}.tmp-", dir=parent)
    t0 = time.monotonic()
    try:
        os.chmod(tmp, 0o755)
        digest = build_fn(Layout(tmp, args.compression))
        with open(os.path.join(tmp, STAMP_NAME), "w") as f:
            f.write(rhash + "\n")
        old = None
        if os.path.lexists(out):
            old = tempfile.mkdtemp(prefix=f".{os.path.basename(out)}.old-", dir=parent)
            os.rename(out, os.path.join(old, "x"))
        os.rename(tmp, out)
        if old:
            shutil.rmtree(old)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    print(f"{args.name}: built {out} in {time.monotonic() - t0:.1f}s, manifest {digest}")


if __name__ == "__main__":
    main()
