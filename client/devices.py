"""Input devices as PortAudio (through sounddevice) sees them, and choosing one by name or index."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from types import ModuleType

from streamst.client.errors import DeviceError

log = logging.getLogger("streamst.client.devices")

LIST_HINT = "run `streamst-mic --list-devices` to see them"


@dataclass(frozen=True)
class InputDevice:
    index: int  # PortAudio's device index (what `--device 3` means)
    name: str
    host_api: str  # "ALSA", "PulseAudio", "Core Audio", "Windows WASAPI", ...
    n_input_channels: int
    default_rate_hz: int  # the device's native rate; the client resamples it to 16 kHz
    is_default: bool = False


def sounddevice() -> ModuleType:
    """The sounddevice module, or a DeviceError that says what to install."""
    try:
        import sounddevice as sd
    except ImportError as e:
        raise DeviceError(
            "the microphone needs the sounddevice package; install it with `pip install 'streamst[mic]'` "
            "(or stream a file with --file)"
        ) from e
    except OSError as e:
        raise DeviceError(
            f"PortAudio is not installed ({e}); install it with `apt-get install libportaudio2` "
            "(macOS: `brew install portaudio`), or stream a file with --file"
        ) from e
    return sd


def list_input_devices() -> list[InputDevice]:
    """Every device with at least one input channel, in PortAudio's order."""
    sd = sounddevice()
    host_apis = [api["name"] for api in sd.query_hostapis()]
    default_index = _default_input_index(sd)
    return [
        InputDevice(
            index=info["index"],
            name=info["name"],
            host_api=host_apis[info["hostapi"]],
            n_input_channels=info["max_input_channels"],
            default_rate_hz=int(info["default_samplerate"]),
            is_default=info["index"] == default_index,
        )
        for info in sd.query_devices()
        if info["max_input_channels"] > 0
    ]


def _default_input_index(sd: ModuleType) -> int:
    try:
        return int(sd.default.device[0])
    except (TypeError, ValueError, IndexError):
        return -1


def resolve_device(spec: str | None, devices: list[InputDevice]) -> InputDevice:
    """The device `--device` names: an index, an exact name, or a unique part of a name (any case).

    None picks the system's default input. Raises DeviceError naming the choices when none or several match.
    """
    if not devices:
        raise DeviceError(
            "no input device found; plug in a microphone (or start PulseAudio/PipeWire), or stream a file with --file"
        )
    if spec is None:
        default = next((d for d in devices if d.is_default), None)
        if default is None:
            raise DeviceError(f"there is no default input device; pick one with --device ({LIST_HINT})")
        return default
    spec = spec.strip()
    if spec.isdigit():
        match = next((d for d in devices if d.index == int(spec)), None)
        if match is None:
            raise DeviceError(f"no input device has index {spec}; {LIST_HINT}")
        return match
    exact = [d for d in devices if d.name.casefold() == spec.casefold()]
    matches = exact or [d for d in devices if spec.casefold() in d.name.casefold()]
    if not matches:
        raise DeviceError(f"no input device matches {spec!r}; {LIST_HINT}")
    if len(matches) > 1:
        names = ", ".join(f"{d.index} {d.name!r}" for d in matches)
        raise DeviceError(f"{spec!r} matches several input devices ({names}); give its index with --device")
    return matches[0]


def describe(device: InputDevice) -> str:
    """One line for --list-devices: '* 3  USB Mic (ALSA), 1 in, 48000 Hz' (* marks the default)."""
    mark = "*" if device.is_default else " "
    return (
        f"{mark} {device.index:>2}  {device.name} ({device.host_api}), "
        f"{device.n_input_channels} in, {device.default_rate_hz} Hz"
    )
