"""Speech encoders: audio window → source words with times."""

from streamst.encoders.base import SpeechEncoder

__all__ = ["SpeechEncoder"]
