"""Shared by the HTTP provider tests: the test number, Twilio callback URL, backend maker."""

from __future__ import annotations

from typing import Any

from smsgw.providers import AndroidGatewayBackend, InfobipBackend, TwilioBackend, VonageBackend
from tests.smsgw.fakeproviders import (
    ANDROID_PASSWORD,
    ANDROID_USER,
    INFOBIP_KEY,
    TWILIO_SID,
    TWILIO_TOKEN,
    VONAGE_KEY,
    VONAGE_SECRET,
)

NUMBER = "+77012345678"
CALLBACK = "https://gw.example.org/twilio/status?site=kz"


AnyBackend = TwilioBackend | VonageBackend | InfobipBackend | AndroidGatewayBackend


def make(kind: str, url: str, *, good: bool = True, **extra: Any) -> AnyBackend:
    wrong = "" if good else "-wrong"
    if kind == "twilio":
        return TwilioBackend(
            url, TWILIO_SID, TWILIO_TOKEN + wrong, from_="Kopir", status_callback=CALLBACK
        )
    if kind == "vonage":
        return VonageBackend(url, VONAGE_KEY, VONAGE_SECRET + wrong, from_="Kopir")
    if kind == "infobip":
        return InfobipBackend(url, INFOBIP_KEY + wrong, from_="Kopir")
    return AndroidGatewayBackend(url, ANDROID_USER, ANDROID_PASSWORD + wrong, **extra)
