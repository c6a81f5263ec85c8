"""Reading runs: a run file as an ``xarray.Dataset`` (``open_run``), and ``repair`` of a killed writer's file.

``open_run(path)`` reads a run file (or one point of a merged sweep file, ``group="points/NNNN"``)
through ``dynsim.store.RunReader``, so it shows what every dynsim reader shows: the committed
records only, on a complete, interrupted, killed or still running file alike. Everything is
loaded into memory; the Dataset stays valid once the file is closed (or replaced by ``resume``).

    ds = open_run("RUN.h5")
    ds.loss_train.mean("replica").plot(x="t")
    ds.isel(record=-1).ntk                        # [replica, probe, probe2] at the last record
    ds.swap_dims(record="step").sel(step=1000, method="nearest")   # by training step

What the Dataset holds:

* every observable ``/observables/NAME`` as a variable, with the dimension names of its ``dims``
  attribute (record, replica, probe, probe2, source, rank, wait, output_index, layer, ...) and
  its ``units`` and ``description``;
* coordinates: ``step`` and ``t`` along ``record``; every other used dimension's scale from the
  file (``replica``, ``probe``, ... as 0..n-1; ``wait`` as the waiting times t_w in steps, with
  ``wait_t`` in units of t); ``probe_x`` [probe, input_dim] (``/probes/x``), ``source_x``,
  ``source_y`` and ``source_index`` (``/sources``) where the run has probes and sources;
* the kind's named inputs ``/inputs/NAME`` (the deep MLP's ``noise_x``, ``basin_index``) as
  variables ``NAME``;
* ``attrs``: the file's root attributes, ``config`` (the resolved TOML text), ``config_sha256``,
  ``kind``, ``status_*`` (code, message, n_records, last_step, ...), ``model_*`` and ``training_*``
  (the /model and /training attributes), ``source_file`` and ``group``: scalars, strings and
  1-d numeric arrays only, as netCDF allows (booleans become 0/1), so ``ds.to_netcdf`` works.

``repair(path)`` (``dynsim repair FILE``): a writer killed with SIGKILL cannot close its file, so
HDF5's "file is already open for write" flags stay set in the superblock and plain
``h5py.File(path, "r")`` (and other HDF5 tools) refuse the file, although its content is valid
(dynsim's own readers open it in SWMR-read mode, which accepts a file an SWMR writer flagged). ``repair``
clears those flags in a byte copy of the file, checks that nothing else changed, and renames the
copy over the file. The file is not otherwise touched: ``dynsim resume`` still continues it.
"""
import hashlib
import os
import shutil
import struct
from pathlib import Path

import h5py
import numpy as np

from .store import (LAYOUT_CHAIN, RunReader, StoreError, WriterLock, check_free_space_for_copy, file_kind,
                    file_layout, is_sweep_file, open_for_reading)


# -- open_run ---------------------------------------------------------------------------------------
def open_run(path, group: str | None = None):
    """The committed records of a run file (or of the sweep point ``group``) as an ``xarray.Dataset``.

    Raises ``StoreError`` (naming the file and what to do) for a missing, foreign or damaged file,
    a max-norm chain file, or a merged sweep file opened without ``group``.
    """
    import xarray as xr  # imported here: 'import dynsim' must not need xarray (or pandas)

    path = Path(path)
    _refuse_other_layouts(path, group)
    with RunReader(path, group) as rd:
        node = rd.file  # the run's root: the file, or the sweep point's group
        n = rd.n_records
        sizes: dict[str, int] = {}
        data_vars = {}
        for name in rd.observable_names:
            values = rd.observable(name)  # [: n_records]: never a record past the last commit
            dims = rd.observable_dims(name)
            if len(dims) != values.ndim:
                raise StoreError(f"{path}: /observables/{name} has {values.ndim} axes but its dims attribute "
                                 f"names {len(dims)} ({','.join(dims)}); the file is damaged")
            sizes.update(zip(dims, values.shape))
            data_vars[name] = xr.Variable(dims, values, attrs=_flat_attrs(node["observables"][name].attrs,
                                                                           skip=("dims", "DIMENSION_LIST")))
        for name, values in rd.inputs().items():
            attrs = node["inputs"][name].attrs
            preferred = tuple(str(attrs["dims"]).split(",")) if "dims" in attrs else ()
            dims = _axis_names(name, values.shape, preferred, sizes)
            data_vars[name if name not in data_vars else f"input_{name}"] = xr.Variable(
                dims, values, attrs=_flat_attrs(attrs, skip=("dims",)))
        used = {d for v in data_vars.values() for d in v.dims}
        coords = {"step": xr.Variable("record", rd.steps, attrs={"description": "training step of each record"}),
                  "t": xr.Variable("record", rd.times, attrs=_flat_attrs(node["time/t"].attrs))}
        coords.update(_scale_coords(node, used | {"replica"}, sizes))
        coords.update(_input_coords(node, used, sizes))
        attrs = _run_attrs(rd, path, group, n)
    return xr.Dataset(data_vars, coords=coords, attrs=attrs)


def _refuse_other_layouts(path: Path, group):
    """Files that are dynsim's but not runs get a message that says what reads them."""
    if group is None and path.is_file() and is_sweep_file(path):
        raise StoreError(f"{path} is a merged sweep file: open one point, e.g. open_run(path, group='points/0000') "
                         "(dynsim.store.sweep_points lists the points and their axis values)")
    try:
        layout = file_layout(path, group)
    except (OSError, KeyError):
        return  # missing, foreign or damaged: RunReader says which
    if layout == LAYOUT_CHAIN:
        raise StoreError(f"{path} is a max-norm chain file, not a time-series run: read it with "
                         "dynsim.store.ChainReader (or 'dynsim info', 'analysis report')")


def _axis_names(name, shape, preferred, sizes) -> tuple[str, ...]:
    """Dimension names for an array: ``preferred`` where given and consistent with the sizes the
    Dataset already has (xarray needs one size per name), ``NAME_dim_I`` otherwise."""
    dims = []
    for i, size in enumerate(shape):
        dim = preferred[i] if i < len(preferred) else None
        if dim is None or sizes.get(dim, size) != size or dim in dims:
            dim = f"{name}_dim_{i}"
        sizes.setdefault(dim, size)
        dims.append(dim)
    return tuple(dims)


def _scale_coords(node, dims, sizes) -> dict:
    """The run's own dimension scales (``/observables/{replica,probe,wait,...}``) as index coordinates."""
    import xarray as xr

    g, out = node["observables"], {}
    for dim in sorted(dims):
        ds = g.get(dim)
        if dim == "record" or not isinstance(ds, h5py.Dataset) or not h5py.h5ds.is_scale(ds.id):
            continue
        values = ds[()]
        if values.shape != (sizes.get(dim, len(values)),):
            continue
        attrs = {"units": "steps", "description": "waiting time t_w"} if dim == "wait" else {}
        out[dim] = xr.Variable(dim, values, attrs=attrs)
    two_time = node.get("two_time")
    if "wait" in out and two_time is not None and "t_w_time" in two_time:
        t_w = two_time["t_w_time"][()]
        if t_w.shape == out["wait"].shape:
            out["wait_t"] = xr.Variable("wait", t_w, attrs={"units": "t", "description": "waiting time t_w in t"})
    return out


def _input_coords(node, used, sizes) -> dict:
    """The probe and source inputs of the simple network's kind, along the dims they label: only
    where their rows match the dim (a deep run stores none; its named inputs take their place)."""
    import xarray as xr

    out = {}
    for dim, group, names in (("probe", "probes", ("x",)), ("source", "sources", ("x", "y", "index"))):
        if dim not in used or group not in node:
            continue
        for name in names:
            if name not in node[group]:
                continue
            values = node[group][name][()]
            if values.ndim == 0 or values.shape[0] == 0 or values.shape[0] != sizes.get(dim):
                continue
            rest = ("input_dim",) if name == "x" else ("output_index",) if name == "y" else ()
            label = f"{dim}_{name}"
            dims = (dim,) + _axis_names(label, values.shape[1:], rest, sizes)
            out[label] = xr.Variable(dims, values)
    return out


def _run_attrs(rd, path, group, n_records) -> dict:
    attrs = _flat_attrs(rd.file.attrs)
    kind = attrs.get("kind") or file_kind(path, group)
    attrs.update(config=rd.config_text, config_sha256=rd.config_digest, kind=str(kind), source_file=str(path.resolve()),
                 group=group or "")
    attrs.update({f"status_{k}": v for k, v in _flat_attrs(rd.status).items()})
    attrs["status_n_records"] = int(n_records)  # what this Dataset holds (RunReader's, read once)
    attrs.update({f"model_{k}": v for k, v in _flat_attrs(rd.model_attrs).items()})
    attrs.update({f"training_{k}": v for k, v in _flat_attrs(rd.training_attrs).items()})
    return attrs


def _flat_attrs(attrs, skip=()) -> dict:
    """HDF5 attributes as netCDF-friendly values: str, int, float, or a 1-d numeric array."""
    out = {}
    for key, value in dict(attrs).items():
        if key in skip:
            continue
        value = _flat(value)
        if value is not None:
            out[str(key)] = value
    return out


def _flat(value):
    if isinstance(value, bytes):
        return value.decode(errors="replace")
    if isinstance(value, (bool, np.bool_)):
        return int(value)  # netCDF has no boolean attributes
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        if value.dtype.kind == "b":
            return value.astype(np.int8).ravel()
        if value.dtype.kind in "iuf":
            return value.ravel()
        strings = value.dtype.kind in "SU" or all(isinstance(v, (str, bytes)) for v in value.flat)
        if strings:
            return ",".join(str(_flat(v)) for v in value.ravel())
        return None  # object references, compounds: HDF5's bookkeeping, nothing a label needs
    if isinstance(value, (str, int, float)):
        return value
    return None if value is None else str(value)


# -- repair -----------------------------------------------------------------------------------------
_SIGNATURE = b"\x89HDF\r\n\x1a\n"
_COPY_BLOCK = 1 << 22


def repair(path) -> str:
    """Clear HDF5's open-for-write flags that a killed writer left in ``path``, losing nothing.

    Holds the file's ``WriterLock`` throughout (a file another process is writing is refused:
    ``StoreError`` naming that writer). A file plain h5py already opens is left unchanged. Otherwise
    the file is copied byte for byte next to itself (free space is checked first), the superblock's
    status flags are cleared in the copy and its checksum recomputed; the copy must then differ
    from the file only in those bytes, open with plain h5py, and hold the same datasets (bytes),
    attributes and dimension scales; then it atomically replaces the file (``os.replace``: the path
    is the old file or the new one at every instant). The temporary copy is removed on every
    failure. The same as HDF5's ``h5clear -s``, made safe. The new file is a new inode: hard links
    to the old one keep the old file, and it belongs to whoever repaired it (its mode is kept).
    Returns a one-line message.
    """
    path = Path(path)
    if not path.is_file():
        raise StoreError(f"{path}: no such file" if not path.exists() else f"{path} is not a regular file")
    if path.is_symlink():  # replacing the link would turn it into a copy and leave its target flagged
        raise StoreError(f"{path} is a symbolic link; repair the file it points to: {path.resolve()}")
    with WriterLock(path):
        problem = _plain_open_error(path)
        if problem is None:
            return f"{path} needs no repair: plain h5py opens it (no open-for-write flag set); nothing was changed"
        if "already open for write" not in problem:
            raise StoreError(f"{path} cannot be repaired: it does not open as HDF5 for a reason other than a "
                             f"killed writer's flag ({problem}); nothing was changed")
        offset, block = _superblock(path)
        patched = _cleared_superblock(path, block)
        check_free_space_for_copy(path, "repair")
        tmp = path.with_name(path.name + ".repair.partial")
        try:
            shutil.copyfile(path, tmp)
            with open(tmp, "r+b") as f:
                f.seek(offset)
                f.write(patched)  # one write: flags byte and checksum together
                f.flush()
                os.fsync(f.fileno())
            shutil.copymode(path, tmp)  # after the patch: a read-only file's copy is read-only too
            _verify_repaired_copy(path, tmp, offset, block, patched)
            os.replace(tmp, path)  # the commit point: PATH is the old file until here, the new one after
        except OSError as exc:
            raise StoreError(f"repairing {path} failed: {exc.strerror or exc}; nothing was changed") from None
        finally:
            tmp.unlink(missing_ok=True)
        _fsync_directory(path.parent)
        return f"repaired {path}: cleared the open-for-write flag its killed writer left; plain h5py opens it now " \
               f"and every dataset, attribute and dimension scale is unchanged{_status_hint(path)}"


def _plain_open_error(path: Path) -> str | None:
    """None when plain ``h5py.File(path, 'r')`` opens the file, else HDF5's reason."""
    try:
        h5py.File(path, "r").close()
    except OSError as exc:
        return str(exc)
    return None


def _superblock(path: Path) -> tuple[int, bytes]:
    """(offset, bytes) of a version 2 or 3 superblock, the ones with status flags and a checksum.

    HDF5 looks for the signature at 0, 512, 1024, 2048, ... (a user block may precede it).
    """
    size = path.stat().st_size
    with open(path, "rb") as f:
        offset = 0
        while offset + len(_SIGNATURE) <= size:
            f.seek(offset)
            head = f.read(12)
            if head[:8] == _SIGNATURE:
                break
            offset = 512 if offset == 0 else offset * 2
        else:
            raise StoreError(f"{path} has no HDF5 superblock signature: not an HDF5 file; nothing was changed")
        version, size_offsets = head[8], head[9]
        if version not in (2, 3) or size_offsets not in (2, 4, 8, 16):
            raise StoreError(f"{path} has an HDF5 superblock of version {version}, which 'dynsim repair' does not "
                             "handle (dynsim writes version 3); nothing was changed: try HDF5's 'h5clear -s'")
        f.seek(offset)
        block = f.read(12 + 4 * size_offsets + 4)  # 12 fixed bytes, 4 addresses, checksum
    if _stored_checksum(block) != lookup3(block[:-4]):
        raise StoreError(f"{path}: its superblock checksum does not match its bytes (a damaged file, or one this "
                         "repair does not understand); nothing was changed")
    return offset, block


def _cleared_superblock(path: Path, block: bytes) -> bytes:
    """The superblock with its status flags (byte 11: write and SWMR-write access) cleared, checksum redone."""
    if block[11] == 0:
        raise StoreError(f"{path} does not open with plain h5py, but its superblock carries no open-for-write "
                         "flag; 'dynsim repair' cannot help: nothing was changed")
    body = block[:11] + b"\x00" + block[12:-4]
    return body + struct.pack("<I", lookup3(body))


def _stored_checksum(block: bytes) -> int:
    return struct.unpack("<I", block[-4:])[0]


def lookup3(data: bytes, initval: int = 0) -> int:
    """Bob Jenkins' lookup3 ``hashlittle``, the checksum of HDF5's version 2 and 3 superblocks
    (``H5_checksum_lookup3``): 12 bytes at a time as three little-endian words, the last 1..12
    bytes zero-padded, then the final mix (none for empty input)."""
    mask = 0xFFFFFFFF

    def rot(x, k):
        return ((x << k) | (x >> (32 - k))) & mask

    length = len(data)
    s = [(0xDEADBEEF + length + initval) & mask] * 3  # a, b, c
    if length == 0:
        return s[2]
    pos = 0
    while True:
        words = struct.unpack("<III", data[pos:pos + 12].ljust(12, b"\x00"))
        s = [(v + w) & mask for v, w in zip(s, words)]
        pos += 12
        if pos >= length:
            break
        # mix(a, b, c): a -= c; a ^= rot(c, 4); c += b; then the same on (b, a, c), (c, b, a), ...
        for i, k in enumerate((4, 6, 8, 16, 19, 4)):
            x, y, z = i % 3, (i + 1) % 3, (i + 2) % 3
            s[x] = ((s[x] - s[z]) & mask) ^ rot(s[z], k)
            s[z] = (s[z] + s[y]) & mask
    # final(a, b, c): c ^= b; c -= rot(b, 14); a ^= c; a -= rot(c, 11); b ^= a; ... (7 steps)
    for i, k in enumerate((14, 11, 25, 16, 4, 14, 24)):
        x = (2 + i) % 3
        z = (x + 2) % 3
        s[x] = ((s[x] ^ s[z]) - rot(s[z], k)) & mask
    return s[2]


def _verify_repaired_copy(path: Path, tmp: Path, offset: int, old: bytes, new: bytes):
    """Refuse (StoreError) unless the copy differs from the file in the superblock's flags and
    checksum only, opens with plain h5py, and holds the same objects, bytes, attributes and scales."""
    changed = {offset + i for i in range(len(old)) if old[i] != new[i]}
    if not changed <= {offset + 11} | set(range(offset + len(old) - 4, offset + len(old))):
        raise StoreError(f"repairing {path}: the patched superblock differs in more than its flags and checksum "
                         "(a bug); nothing was changed")
    with open(path, "rb") as a, open(tmp, "rb") as b:
        at = 0
        while True:
            x, y = a.read(_COPY_BLOCK), b.read(_COPY_BLOCK)
            if x != y:
                diff = {at + i for i in range(min(len(x), len(y))) if x[i] != y[i]}
                if len(x) != len(y) or not diff <= changed:
                    raise StoreError(f"repairing {path}: the copy differs from the file beyond the superblock's "
                                     "flags (the file changed while it was copied?); nothing was changed")
            if not x:
                break
            at += len(x)
    try:
        with open_for_reading(path) as before:
            expected = _content(before)
    except (OSError, KeyError, ValueError, RuntimeError) as exc:
        raise StoreError(f"{path} cannot be repaired: it does not read back whole even as dynsim reads it "
                         f"({exc}); nothing was changed") from None
    try:
        with h5py.File(tmp, "r") as repaired:  # the point of the repair: plain h5py opens it and reads it all
            content = _content(repaired)
    except (OSError, KeyError, ValueError, RuntimeError) as exc:
        # e.g. objects past the end-of-allocation address the killed writer had not yet stored: a repair
        # that clears the flags only cannot fix that (HDF5's 'h5clear -s -i' raises that address too)
        raise StoreError(f"repairing {path}: with its flag cleared, plain h5py still cannot read it ({exc}); "
                         "nothing was changed") from None
    if content != expected:
        raise StoreError(f"repairing {path}: the repaired copy does not read back the same datasets, "
                         "attributes and dimension scales; nothing was changed")


def _content(f: h5py.File) -> dict:
    """{object name: (kind, attributes, and for a dataset its shape, dtype, sha256 of its bytes and
    the scales attached to each axis)} of every object in an HDF5 file."""
    out = {"/": ("group", _attr_digest(f, f.attrs))}

    def visit(name, obj):
        if isinstance(obj, h5py.Dataset):
            axes = 0 if obj.shape is None else obj.ndim
            scales = tuple(tuple(s.name for s in obj.dims[i].values()) for i in range(axes))
            out[name] = ("dataset", _attr_digest(f, obj.attrs), obj.shape, obj.dtype.str, _data_digest(f, obj), scales)
        else:
            out[name] = ("group", _attr_digest(f, obj.attrs))
    f.visititems(visit)
    return out


def _attr_digest(f, attrs) -> tuple:
    items = []
    for key in sorted(attrs.keys()):
        value = attrs[key]
        if isinstance(value, np.ndarray) and _has_objects(value.dtype):
            # object references (DIMENSION_LIST, a scale's REFERENCE_LIST of (reference, axis) pairs) are
            # read as in-memory handles: compare what they point at
            value = tuple(_deref(f, v) for v in value.ravel())
        elif isinstance(value, np.ndarray):
            value = (value.dtype.str, value.shape, value.tobytes())
        items.append((key, repr(value)))
    return tuple(items)


def _has_objects(dtype) -> bool:
    if dtype.fields:
        return any(_has_objects(field[0]) for field in dtype.fields.values())
    return dtype.kind == "O"


def _deref(f, value):
    if isinstance(value, h5py.Reference):
        return f[value].name if value else None
    if isinstance(value, np.void) and value.dtype.names:
        return tuple(_deref(f, value[name]) for name in value.dtype.names)
    if isinstance(value, np.ndarray):
        return tuple(_deref(f, v) for v in value.ravel())
    return value


def _data_digest(f, ds: h5py.Dataset) -> str:
    """sha256 of a dataset's values, read in slabs along its first axis (files can be large)."""
    digest = hashlib.sha256()
    if ds.shape is None:  # an empty (null dataspace) dataset
        return "null"
    if _has_objects(ds.dtype):  # variable-length strings, references: by value, not by in-memory handle
        values = np.asarray(ds[()])
        digest.update(repr(tuple(_deref(f, v) for v in values.ravel())).encode())
        return digest.hexdigest()
    if ds.ndim == 0:
        digest.update(np.asarray(ds[()]).tobytes())
        return digest.hexdigest()
    row = max(1, ds.dtype.itemsize * int(np.prod(ds.shape[1:], dtype=np.int64)))
    step = max(1, (64 << 20) // row)
    for start in range(0, ds.shape[0], step):
        digest.update(np.ascontiguousarray(ds[start:start + step]).tobytes())
    return digest.hexdigest()


def _fsync_directory(directory: Path):
    """Make the rename durable (the new name on disk, not only in the page cache)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _status_hint(path: Path) -> str:
    """For a run whose status still says 'running' (its writer was killed): how to continue it."""
    try:
        with h5py.File(path, "r") as f:
            code = f["status/code"][()].decode() if "status/code" in f else ""
    except (OSError, KeyError, AttributeError):
        return ""
    return "; its status is still 'running': 'dynsim resume' continues it" if code == "running" else ""
