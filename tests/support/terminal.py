"""A pseudo-terminal for tests of what a person sees (human log lines, progress bars)."""

import fcntl
import os
import pty
import re
import struct
import termios
import threading


class Terminal:
    """A pseudo-terminal whose output is read as it comes, so no child blocks writing."""

    def __init__(self) -> None:
        self.master, self.slave = pty.openpty()
        # A terminal has a size (a fresh pty is 0x0, where a progress bar has no room).
        fcntl.ioctl(self.slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
        self._chunks: list[bytes] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        while True:
            try:
                chunk = os.read(self.master, 65536)
            except OSError:  # EIO: every writer has gone
                return
            if not chunk:
                return
            self._chunks.append(chunk)

    @property
    def text(self) -> str:
        return b"".join(self._chunks).decode(errors="replace")

    def lines(self) -> list[str]:
        """What a person reads: each line as the terminal shows it after any `\\r` rewrite."""
        out = []
        for line in self.text.replace("\r\n", "\n").split("\n"):
            shown = line.rsplit("\r", 1)[-1]
            shown = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", shown).strip()
            if shown:
                out.append(shown)
        return out

    def close(self) -> None:
        os.close(self.slave)
        self._reader.join(10)
        os.close(self.master)
