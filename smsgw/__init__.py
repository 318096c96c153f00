"""smsgw: SMS encoding and segmentation, a durable queue, encrypted subscribers, backends.
Depends on nothing else in kopir; it sends text that it is given."""

from smsgw.errors import EncodingError, KeyFileError, QueueError, SmsError, SubscriberError
from smsgw.segment import Part, Segmentation, decode, segment

__all__ = [
    "EncodingError",
    "KeyFileError",
    "Part",
    "QueueError",
    "Segmentation",
    "SmsError",
    "SubscriberError",
    "decode",
    "segment",
]
