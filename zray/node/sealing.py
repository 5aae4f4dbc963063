"""Sealed object transfers: AES-256-GCM on the chunk sockets, keyed by the cluster.

Chunks between hosts are most of a cluster's bytes.  CURVE (XSalsa20-Poly1305)
costs about 2.2 CPU-seconds per GB end to end on the machines zray is measured
on, so an encrypted pull on two cores stopped near 0.6 GB/s.  AES-256-GCM with
the CPU's AES instructions, from the OpenSSL ``libcrypto`` that CPython's own
``hashlib`` and ``ssl`` load, runs at several GB/s per core.  With
``Config.transfer_encryption == "aes-gcm"`` (the default) the chunk server and
the pulls' sockets drop CURVE and seal every message themselves:

* keys: ``master = HMAC-SHA256(cluster server secret, "zray transfer aes-gcm
  v1")`` (``zray.security.transfer_seal_key``), known only to holders of the cluster's key file (the same secret that
  admits CURVE members).  Each pulling socket draws a random 16-byte *salt*;
  the requests it sends and the chunks it gets back use ``HMAC-SHA256(master,
  salt)``, so no key seals more than one socket's traffic;
* a request is ``[salt + nonce + tag, CHUNK_REQUEST frames...]``: the frames are
  authenticated (GCM's additional data), not hidden (they name an object, an
  offset, a length);
* a chunk is ``[nonce + tag, CHUNK header frames..., ciphertext]``: the header
  is authenticated, the bytes are encrypted;
* nonces are 12 random bytes per message under a per-socket key.

A message that does not open (wrong key, altered, truncated) is dropped and
logged; nothing of it is used.  Without the cluster's keys (``ipc://`` on one
host, or ``insecure``) nothing is sealed, as before.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys
from collections import OrderedDict

SALT_BYTES = 16
NONCE_BYTES = 12
TAG_BYTES = 16
_GCM_GET_TAG = 0x10
_GCM_SET_TAG = 0x11
_KEYS_KEPT = 256      # requesters' keys a chunk server keeps


class SealError(ValueError):
    """A sealed message that does not open: altered, truncated or foreign."""


# --- libcrypto ---------------------------------------------------------------------

def _libcrypto_path() -> str | None:
    """The libcrypto this interpreter already loaded for ``hashlib`` (Linux), or
    the system's versioned one."""
    import _hashlib  # noqa: F401  (loads libcrypto into this process)
    try:
        with open("/proc/self/maps") as maps:
            for line in maps:
                path = line.rstrip("\n").split(" ")[-1]
                if "/libcrypto.so" in path:
                    return path
    except OSError:
        pass
    if sys.platform.startswith("linux"):
        name = ctypes.util.find_library("crypto")
        return name if name and ".so." in name else None
    return None     # elsewhere an unversioned libcrypto may abort the process


def _load():
    path = _libcrypto_path()
    if path is None:
        raise OSError("OpenSSL's libcrypto was not found in this process")
    lib = ctypes.CDLL(path)
    lib.EVP_CIPHER_CTX_new.restype = ctypes.c_void_p
    lib.EVP_CIPHER_CTX_free.argtypes = [ctypes.c_void_p]
    lib.EVP_aes_256_gcm.restype = ctypes.c_void_p
    for name in ("EVP_EncryptInit_ex", "EVP_DecryptInit_ex"):
        getattr(lib, name).argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p,
                                       ctypes.c_void_p, ctypes.c_void_p]
    for name in ("EVP_EncryptUpdate", "EVP_DecryptUpdate"):
        getattr(lib, name).argtypes = [ctypes.c_void_p, ctypes.c_void_p,
                                       ctypes.POINTER(ctypes.c_int), ctypes.c_void_p,
                                       ctypes.c_int]
    for name in ("EVP_EncryptFinal_ex", "EVP_DecryptFinal_ex"):
        getattr(lib, name).argtypes = [ctypes.c_void_p, ctypes.c_void_p,
                                       ctypes.POINTER(ctypes.c_int)]
    lib.EVP_CIPHER_CTX_ctrl.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_int,
                                        ctypes.c_void_p]
    return lib


_lib = None
_lib_error: str | None = None


def libcrypto():
    """The loaded library; raises ``OSError`` saying what to do when there is none."""
    global _lib, _lib_error
    if _lib is None and _lib_error is None:
        try:
            _lib = _load()
        except (OSError, AttributeError, ImportError) as exc:
            _lib_error = str(exc)
    if _lib is None:
        raise OSError(f"sealed transfers need OpenSSL's libcrypto ({_lib_error}); start "
                      "every node of the cluster with ZRAY_TRANSFER_ENCRYPTION=curve "
                      "(or _system_config={'transfer_encryption': 'curve'})")
    return _lib


class _Buffer(ctypes.Structure):        # Py_buffer, to reach read-only buffers
    _fields_ = [("buf", ctypes.c_void_p), ("obj", ctypes.c_void_p),
                ("len", ctypes.c_ssize_t), ("itemsize", ctypes.c_ssize_t),
                ("readonly", ctypes.c_int), ("ndim", ctypes.c_int),
                ("format", ctypes.c_char_p), ("shape", ctypes.c_void_p),
                ("strides", ctypes.c_void_p), ("suboffsets", ctypes.c_void_p),
                ("internal", ctypes.c_void_p)]


_get_buffer = ctypes.pythonapi.PyObject_GetBuffer
_get_buffer.argtypes = [ctypes.py_object, ctypes.POINTER(_Buffer), ctypes.c_int]
_release_buffer = ctypes.pythonapi.PyBuffer_Release
_release_buffer.argtypes = [ctypes.POINTER(_Buffer)]
_new_bytearray = ctypes.pythonapi.PyByteArray_FromStringAndSize
_new_bytearray.argtypes = [ctypes.c_void_p, ctypes.c_ssize_t]
_new_bytearray.restype = ctypes.py_object
_WRITABLE = 0x1


class _Pinned:
    """A C pointer to a Python buffer's bytes while the ``with`` lasts."""

    __slots__ = ("view",)

    def __init__(self, obj, writable: bool = False):
        self.view = _Buffer()
        _get_buffer(obj, ctypes.byref(self.view), _WRITABLE if writable else 0)

    def __enter__(self):
        return self.view.buf, self.view.len

    def __exit__(self, *exc):
        _release_buffer(ctypes.byref(self.view))


def uninitialized(size: int) -> bytearray:
    """A bytearray of ``size`` bytes that are not zeroed first (they are overwritten)."""
    return _new_bytearray(None, size)


class AesGcm:
    """AES-256-GCM with one key: ``seal`` and ``open`` whole messages."""

    def __init__(self, key: bytes):
        if len(key) != 32:
            raise ValueError("AES-256-GCM takes a 32-byte key")
        self.lib = lib = libcrypto()
        self.enc = lib.EVP_CIPHER_CTX_new()
        self.dec = lib.EVP_CIPHER_CTX_new()
        if not self.enc or not self.dec:
            raise MemoryError("EVP_CIPHER_CTX_new failed")
        cipher = lib.EVP_aes_256_gcm()
        if (lib.EVP_EncryptInit_ex(self.enc, cipher, None, key, None) != 1
                or lib.EVP_DecryptInit_ex(self.dec, cipher, None, key, None) != 1):
            raise OSError("libcrypto refused the AES-256-GCM key")

    def __del__(self):
        lib = getattr(self, "lib", None)
        if lib is not None:
            lib.EVP_CIPHER_CTX_free(self.enc)
            lib.EVP_CIPHER_CTX_free(self.dec)

    def seal(self, nonce: bytes, aad: bytes, data, out) -> bytes:
        """Encrypt ``data`` into ``out`` (same length); the 16-byte tag covers
        ``aad`` and ``data``."""
        lib, ctx = self.lib, self.enc
        self._crypt(lib.EVP_EncryptInit_ex, lib.EVP_EncryptUpdate, ctx, nonce, aad, data,
                    out, OSError)
        tag, n = ctypes.create_string_buffer(TAG_BYTES), ctypes.c_int()
        if (lib.EVP_EncryptFinal_ex(ctx, tag, ctypes.byref(n)) != 1
                or lib.EVP_CIPHER_CTX_ctrl(ctx, _GCM_GET_TAG, TAG_BYTES, tag) != 1):
            raise OSError("AES-GCM: finishing failed")
        return tag.raw

    def open(self, nonce: bytes, tag: bytes, aad: bytes, data, out) -> None:
        """Decrypt ``data`` into ``out``; raise ``SealError`` unless the tag
        proves ``aad`` and ``data`` came sealed with this key.  ``out`` holds
        garbage after a failure."""
        lib, ctx = self.lib, self.dec
        self._crypt(lib.EVP_DecryptInit_ex, lib.EVP_DecryptUpdate, ctx, nonce, aad, data,
                    out, SealError)
        if lib.EVP_CIPHER_CTX_ctrl(ctx, _GCM_SET_TAG, TAG_BYTES, tag) != 1:
            raise SealError("the tag was refused")
        if lib.EVP_DecryptFinal_ex(ctx, None, ctypes.byref(ctypes.c_int())) != 1:
            raise SealError("the message does not open with the cluster's key")

    @staticmethod
    def _crypt(init, update, ctx, nonce: bytes, aad: bytes, data, out, error) -> None:
        """Both directions up to the tag: the nonce, the additional data, then
        ``data`` into ``out``."""
        n = ctypes.c_int()
        if init(ctx, None, None, None, nonce) != 1:
            raise OSError("AES-GCM: setting the nonce failed")
        if aad and update(ctx, None, ctypes.byref(n), aad, len(aad)) != 1:
            raise error("AES-GCM: additional data refused")
        if data is not None and len(data):
            with _Pinned(data) as (src, size), _Pinned(out, True) as (dst, room):
                if room < size:
                    raise ValueError("the output buffer is smaller than the data")
                if update(ctx, dst, ctypes.byref(n), src, size) != 1:
                    raise error("AES-GCM: the data was refused")


# --- the transfer protocol's seals --------------------------------------------------

def _socket_key(master: bytes, salt: bytes) -> bytes:
    import hashlib    # here: OpenSSL's libcrypto (~3.6 MB) only in a node that seals
    import hmac
    return hmac.new(master, salt, hashlib.sha256).digest()


def _joined(frames) -> bytes:
    return b"".join(bytes(f) for f in frames)


class RequestSeal:
    """A pulling socket's side: seals its CHUNK_REQUESTs, opens the CHUNKs back."""

    def __init__(self, master: bytes):
        self.salt = os.urandom(SALT_BYTES)
        self.cipher = AesGcm(_socket_key(master, self.salt))
        self.scratch = bytearray()

    def seal_request(self, frames: list) -> list:
        nonce = os.urandom(NONCE_BYTES)
        tag = self.cipher.seal(nonce, _joined(frames), None, None)
        return [self.salt + nonce + tag] + list(frames)

    def open_chunk(self, frames: list):
        """(the CHUNK message's frames, its plaintext bytes or None): the seal
        frame goes; the last frame, when there are more than the header's, is
        the ciphertext.  The plaintext is a view of a scratch buffer reused by
        the next call."""
        if len(frames) < 2 or len(frames[0]) != NONCE_BYTES + TAG_BYTES:
            raise SealError("not a sealed chunk")
        seal = bytes(frames[0])
        nonce, tag = seal[:NONCE_BYTES], seal[NONCE_BYTES:]
        header, payload = frames[1:], None
        if len(frames) == 3:       # a CHUNK is one header frame, then at most one buffer
            header, payload = frames[1:2], frames[2]
        if payload is None:
            self.cipher.open(nonce, tag, _joined(header), None, None)
            return header, None
        size = len(payload)
        if len(self.scratch) < size:
            self.scratch = uninitialized(size)
        self.cipher.open(nonce, tag, _joined(header), payload, self.scratch)
        return header, memoryview(self.scratch)[:size]


class ServerSeal:
    """The chunk server's side: opens requests, seals chunks for their socket."""

    def __init__(self, master: bytes, buffers: int = 16):
        self.master = master
        self.ciphers: OrderedDict[bytes, AesGcm] = OrderedDict()
        self.pool = _BufferPool(buffers)

    def open_request(self, frames: list) -> tuple[bytes, list]:
        """(the requester's salt, the request's frames) of ``[seal, frames...]``."""
        if len(frames) < 2 or len(frames[0]) != SALT_BYTES + NONCE_BYTES + TAG_BYTES:
            raise SealError("not a sealed request")
        seal = bytes(frames[0])
        salt = seal[:SALT_BYTES]
        nonce = seal[SALT_BYTES:SALT_BYTES + NONCE_BYTES]
        tag = seal[SALT_BYTES + NONCE_BYTES:]
        body = frames[1:]
        self._cipher(salt).open(nonce, tag, _joined(body), None, None)
        return salt, body

    def seal_chunk(self, salt: bytes, header: list, payloads: list) -> list:
        """``[seal] + header + [ciphertext]`` for the requester of ``salt``."""
        cipher = self._cipher(salt)
        nonce = os.urandom(NONCE_BYTES)
        if not payloads:
            return [nonce + cipher.seal(nonce, _joined(header), None, None)] + header
        [data] = payloads
        out, track = self.pool.take(len(data))
        tag = cipher.seal(nonce, _joined(header), data, out)
        return [nonce + tag] + header + [_Tracked(memoryview(out)[:len(data)], track)]

    def _cipher(self, salt: bytes) -> AesGcm:
        cipher = self.ciphers.get(salt)
        if cipher is None:
            cipher = self.ciphers[salt] = AesGcm(_socket_key(self.master, salt))
            while len(self.ciphers) > _KEYS_KEPT:
                self.ciphers.popitem(last=False)
        else:
            self.ciphers.move_to_end(salt)
        return cipher


class _Tracked:
    """A frame's bytes and the tracker that frees its pool buffer once sent."""

    __slots__ = ("view", "track")

    def __init__(self, view, track):
        self.view = view
        self.track = track


class _BufferPool:
    """Ciphertext buffers reused once ZeroMQ has sent them (no fresh pages, no
    zeroing per chunk).  ``take`` hands a buffer and a callback that receives
    the send's ``MessageTracker``."""

    def __init__(self, keep: int):
        self.keep = keep
        self.free: list[bytearray] = []
        self.sending: list = []       # (buffer, tracker)

    def take(self, size: int):
        self._reap()
        buf = None
        for i, candidate in enumerate(self.free):
            if len(candidate) >= size:
                buf = self.free.pop(i)
                break
        if buf is None:
            buf = uninitialized(size)
        return buf, lambda tracker, buf=buf: self.sending.append((buf, tracker))

    def _reap(self) -> None:
        still = []
        for buf, tracker in self.sending:
            if tracker is None or tracker.done:
                if len(self.free) < self.keep:
                    self.free.append(buf)
            else:
                still.append((buf, tracker))
        self.sending = still


def send_sealed(sock, frames: list) -> None:
    """Send frames where the last may be a ``_Tracked`` ciphertext."""
    last = frames[-1]
    if isinstance(last, _Tracked):
        tracker = sock.send_multipart(frames[:-1] + [last.view], copy=False, track=True)
        last.track(tracker)
    else:
        sock.send_multipart(frames, copy=False)
