"""③ codec: device profiles (YAML data) compiled into fast payload decoders.

Owns turning an application payload into the vendor-compatible decoded object
of its device model. ``profile.py`` loads and validates profile files and holds
the store, ``decode.py`` the payload layouts, ``nested.py`` the nested and variable
ones (objects, lists, tlv blocks, conditional fields), ``fields.py`` the field types,
``derive.py`` the derived values (fill level, water stage, DALI %), ``encode.py``
the downlink commands, ``js.py`` the QuickJS sandbox for vendor JavaScript codecs
and ``ttn_import.py`` the TTN device-repository import. It
does not own LoRaWAN framing or decryption (``gateway.lorawan``), nor what
happens to a reading next (rules, outbox).
"""

from gateway.codec.decode import Decoded
from gateway.codec.encode import Downlink
from gateway.codec.fields import FORMATS, Output
from gateway.codec.profile import (
    DecodeFunction,
    Example,
    LorawanFacts,
    Profile,
    ProfileStore,
    default_profiles_dir,
    load_profile,
    load_profiles,
)

__all__ = [
    "FORMATS",
    "DecodeFunction",
    "Decoded",
    "Downlink",
    "Example",
    "LorawanFacts",
    "Output",
    "Profile",
    "ProfileStore",
    "default_profiles_dir",
    "load_profile",
    "load_profiles",
]
