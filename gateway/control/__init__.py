"""The local control socket the `edgegw` technician commands talk to.

A Unix socket in the data directory (``control.sock``, mode 0660: root and the
agent's group only). Protocol: the client sends one JSON line ``{"cmd": NAME, ...}``;
the server answers one JSON line, or, for streaming commands (``tail``), one JSON
line per event until the client closes. There is no command that changes the
agent from here yet; the socket is read-only by design until signed fleet
commands exist (issue 8).
"""

SOCKET_NAME = "control.sock"
