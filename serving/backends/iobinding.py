"""Encoder and scorer calls through ONNX Runtime's IO binding, for sessions on a GPU: the user
vectors the encoder leaves in device memory are the scorer's input there, not copied back up.

The gateway still gets a host copy of the vectors (FAISS searches with them; d floats a row),
and keeps passing that array to `score`; DeviceVectors finds the device copy it stands for.
On the CPU the plain `session.run` path is used: binding buys nothing there.
"""

import weakref

import numpy as np

from logitrec.repository import CANDIDATES, LOGITS, USER_VECTOR


class DeviceVectors:
    """The device copy of each encoder output whose host array is still alive. An entry goes
    when its host array is garbage-collected, so device memory follows the batch's lifetime."""

    def __init__(self) -> None:
        self._copies: dict[int, tuple[weakref.ref, object]] = {}

    def keep(self, host: np.ndarray, device_value) -> None:
        key = id(host)
        forget = lambda _, key=key: self._copies.pop(key, None)  # noqa: E731
        self._copies[key] = (weakref.ref(host, forget), device_value)

    def find(self, host: np.ndarray):
        """The device copy of exactly this array (not of a slice or a copy of it), or None."""
        entry = self._copies.get(id(host))
        if entry is not None and entry[0]() is host:
            return entry[1]
        return None

    def __len__(self) -> int:
        return len(self._copies)


def encode_bound(session, feed: dict, device_type: str, device_id: int = 0):
    """(user vectors on the host, the same vectors as an OrtValue on the device)."""
    binding = session.io_binding()
    for name, array in feed.items():
        binding.bind_cpu_input(name, np.ascontiguousarray(array))
    binding.bind_output(USER_VECTOR, device_type, device_id)
    session.run_with_iobinding(binding)
    (device_value,) = binding.get_outputs()
    return device_value.numpy(), device_value


def score_bound(
    session, user_vectors, candidates: np.ndarray, device_type: str, device_id: int = 0
) -> np.ndarray:
    """Logits [B, C] on the host; `user_vectors` an OrtValue already on the device (bound as
    it is) or a host array (copied up by ONNX Runtime)."""
    binding = session.io_binding()
    if isinstance(user_vectors, np.ndarray):
        binding.bind_cpu_input(USER_VECTOR, np.ascontiguousarray(user_vectors))
    else:
        binding.bind_ortvalue_input(USER_VECTOR, user_vectors)
    binding.bind_cpu_input(CANDIDATES, np.ascontiguousarray(candidates))
    binding.bind_output(LOGITS, device_type, device_id)
    session.run_with_iobinding(binding)
    return binding.copy_outputs_to_cpu()[0]
