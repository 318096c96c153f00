"""Exception types of the smsgw package.

Messages never contain a phone number in clear: use the subscriber's keyed reference.
"""

from __future__ import annotations


class SmsError(Exception):
    """Base class for errors the smsgw package raises on purpose."""


class EncodingError(SmsError):
    """Text that cannot be sent as asked (too long, or not GSM-7 where GSM-7 is required)."""


class QueueError(SmsError):
    """The message queue's database is missing, damaged or used wrongly."""


class SubscriberError(SmsError):
    """A number that is not valid, or a subscriber store that cannot be opened."""


class KeyFileError(SmsError):
    """A key file is missing, has the wrong size or mode, or does not open the data."""
