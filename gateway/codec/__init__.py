"""③ codec: device profiles (YAML data) compiled into fast payload decoders.

Owns turning an application payload into the vendor-compatible decoded object
of its device model. ``profile.py`` loads and validates profile files and holds
the store, ``decode.py`` the payload layouts, ``fields.py`` the field types. It
does not own LoRaWAN framing or decryption (``gateway.lorawan``), nor what
happens to a reading next (rules, outbox).
"""

from gateway.codec.decode import Decoded
from gateway.codec.fields import FORMATS, Output
from gateway.codec.profile import (
    Example,
    LorawanFacts,
    Profile,
    ProfileStore,
    default_profiles_dir,
    load_profile,
)

__all__ = [
    "FORMATS",
    "Decoded",
    "Example",
    "LorawanFacts",
    "Output",
    "Profile",
    "ProfileStore",
    "default_profiles_dir",
    "load_profile",
]
