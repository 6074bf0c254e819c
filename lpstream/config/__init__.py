"""The node's configuration: frozen sections with one default each, built once from flags,
``LPSTREAM_*`` environment variables and a TOML file (flags win over the environment, which
wins over the file); and the parsers of addresses, sizes and rates every role shares.

Modules: :mod:`.setting` (how a setting is declared), the sections by family
(:mod:`.serving`, :mod:`.market`, :mod:`.compute`), :mod:`.sections` (the whole
:class:`Config`), :mod:`.values` (parsers) and :mod:`.files` (TOML in and out)."""

from lpstream.config.compute import AiSection, WorkerSection
from lpstream.config.files import MASK, dump_toml, read_config_file
from lpstream.config.market import (
    ChainSection,
    OrchestratorSection,
    PaymentsSection,
    SelectionSection,
)
from lpstream.config.sections import ROLE_DEFAULTS, SECTIONS, Config, NodeSection
from lpstream.config.serving import (
    AccessSection,
    HttpSection,
    IngestSection,
    LimitsSection,
    PlaybackSection,
)
from lpstream.config.setting import Setting, key_of, setting_of
from lpstream.config.values import (
    HostPort,
    is_loopback,
    parse_bitrate,
    parse_byte_size,
    parse_host_port,
    parse_pixels,
)

__all__ = [
    "MASK",
    "ROLE_DEFAULTS",
    "SECTIONS",
    "AccessSection",
    "AiSection",
    "ChainSection",
    "Config",
    "HostPort",
    "HttpSection",
    "IngestSection",
    "LimitsSection",
    "NodeSection",
    "OrchestratorSection",
    "PaymentsSection",
    "PlaybackSection",
    "SelectionSection",
    "Setting",
    "WorkerSection",
    "dump_toml",
    "is_loopback",
    "key_of",
    "parse_bitrate",
    "parse_byte_size",
    "parse_host_port",
    "parse_pixels",
    "read_config_file",
    "setting_of",
]
