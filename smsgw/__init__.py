"""smsgw: SMS encoding and segmentation, a durable queue, encrypted subscribers, backends.
Depends on nothing else in kopir; it sends text that it is given."""

from smsgw.backends import BACKENDS, BackendConfigError, make_backend, webhook_routes
from smsgw.errors import EncodingError, KeyFileError, QueueError, SmsError, SubscriberError
from smsgw.generic import GenericHttpBackend
from smsgw.http import ProviderError
from smsgw.numbers import NumberKey, create_key_file, load_key_file, normalize
from smsgw.providers import AndroidGatewayBackend, InfobipBackend, TwilioBackend, VonageBackend
from smsgw.queue import Message, NewMessage, Queue, State, normalize_provider_id
from smsgw.segment import Part, Segmentation, decode, segment
from smsgw.smpp import SmppBackend, SmppError, SmppSettings
from smsgw.subscribers import ImportReport, Subscriber, SubscriberStore
from smsgw.webhooks import WebhookServer, WebhookUnavailable, serve_webhooks
from smsgw.worker import StepReport, Worker, enqueue, new_messages, subscriber_commands

__all__ = [
    "BACKENDS",
    "AndroidGatewayBackend",
    "BackendConfigError",
    "GenericHttpBackend",
    "InfobipBackend",
    "ProviderError",
    "TwilioBackend",
    "VonageBackend",
    "WebhookServer",
    "WebhookUnavailable",
    "Worker",
    "enqueue",
    "make_backend",
    "new_messages",
    "serve_webhooks",
    "subscriber_commands",
    "webhook_routes",
    "EncodingError",
    "ImportReport",
    "KeyFileError",
    "Message",
    "NewMessage",
    "NumberKey",
    "Part",
    "Queue",
    "QueueError",
    "Segmentation",
    "SmppBackend",
    "SmppError",
    "SmppSettings",
    "SmsError",
    "State",
    "StepReport",
    "Subscriber",
    "SubscriberError",
    "SubscriberStore",
    "create_key_file",
    "decode",
    "load_key_file",
    "normalize",
    "normalize_provider_id",
    "segment",
]
