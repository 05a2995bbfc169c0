"""The session's cassette: the recorder or player that is open, and ``%qwen record``/``replay``.

The settings (``cassette``, ``cassette_mode``, ``replay_speed``) stay traits of the magics,
so ``%config`` and ``%qwen config`` set them too; this object keeps what they opened, opens
it on first use and closes it when they change. Commands return the line to show.
"""

from __future__ import annotations

import argparse
import os
from typing import TYPE_CHECKING, Protocol

from IPython.core.error import UsageError

if TYPE_CHECKING:
    from typing import TypeAlias

    from ._cassette import Player, Recorder

    Opened: TypeAlias = Recorder | Player  # what an open cassette is: a transport that records or replays

REPLAY_VARIABLE = "QWEN_MAGIC_REPLAY"  # a cassette: the whole session replays it


class Settings(Protocol):
    """The cassette settings (``QwenMagics`` traits)."""

    cassette: str
    cassette_mode: str
    replay_speed: float


class CassetteSession:
    """The open cassette (a ``Recorder`` or ``Player``) for the settings' (mode, path)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.opened: Opened | None = None
        self._id: tuple[str, str] | None = None
        self.forced = False  # QWEN_MAGIC_REPLAY: the session replays, whatever the notebook records

    def _key(self) -> tuple[str, str]:
        s = self.settings
        return s.cassette_mode, os.path.abspath(os.path.expanduser(s.cassette)) if s.cassette else ""

    def replay_from_environment(self) -> str | None:
        """With ``QWEN_MAGIC_REPLAY`` set, the whole session replays that cassette: the note saying so, else None."""
        replay = os.environ.get(REPLAY_VARIABLE, "").strip()
        if not replay:
            return None
        self.settings.cassette, self.settings.cassette_mode, self.forced = replay, "replay", True
        return f"{REPLAY_VARIABLE}: answers come from the cassette {replay}; no network, no key needed."

    def drop(self) -> None:
        """Close the open cassette, if any."""
        if self.opened is not None:
            self.opened.close()
        self.opened, self._id = None, None

    def transport(self) -> Opened | None:
        """The cassette's transport while recording or replaying (opened on first use), else None."""
        s = self.settings
        if s.cassette_mode == "off":
            return None
        from ._cassette import Player, open_cassette

        if self.opened is None or self._id != self._key():
            self.drop()
            self.opened = open_cassette(s.cassette_mode, s.cassette, speed=s.replay_speed)
            self._id = self._key()
        if isinstance(self.opened, Player):
            self.opened.speed = s.replay_speed
        return self.opened

    def command(self, args: argparse.Namespace) -> str:
        """``%qwen record …`` and ``%qwen replay …``: start, stop, pace, status; the line to show."""
        if args.stop:
            return self._stop(args.command)
        if getattr(args, "speed", None) is not None:
            self.settings.replay_speed = args.speed
        if args.file is None:
            transport = self.transport()
            if transport is None:
                return "No cassette: not recording or replaying. Start with `%qwen record FILE` or `%qwen replay FILE`."
            return f"Now {transport.describe()}."
        return self._start(args.command, args.file, overwrite=getattr(args, "overwrite", False))

    def _stop(self, mode: str) -> str:
        doing = "recording" if mode == "record" else "replaying"
        s = self.settings
        if s.cassette_mode == mode:
            try:
                opened = self.transport()
                done = opened.describe() if opened is not None else f"{doing} {s.cassette}"
            except UsageError:  # a cassette that never opened
                done = f"{doing} {s.cassette}"
            s.cassette_mode = "off"
            note = f"Stopped {done}. Requests go to the service again."
        else:
            note = f"Not {doing}: nothing to stop."
        self.forced = self.forced and mode != "replay"
        return note

    def _start(self, mode: str, file: str, *, overwrite: bool) -> str:
        s = self.settings
        if mode == "record" and self.forced:
            return (
                f"{REPLAY_VARIABLE} is set, so this session replays {s.cassette} and {file} is not "
                "recorded. To record, run `%qwen replay --stop` first."
            )
        from ._cassette import Recorder, exchange_count, open_cassette, speed_text

        if mode == "record":
            from ._client import api_key

            api_key()  # recording needs the service: without a key, stop before the file is touched
        opened = open_cassette(mode, file, speed=s.replay_speed, overwrite=overwrite)
        self.drop()
        s.cassette, s.cassette_mode = file, mode
        self.opened, self._id = opened, self._key()
        if isinstance(opened, Recorder):
            already = f"{exchange_count(opened.count)} already in it" if opened.count else "a new cassette"
            return (
                f"Recording to {file} ({already}): every request and its answer are added as they stream; "
                "the key is never written. `%qwen record --stop` ends it."
            )
        return (
            f"Replaying {file}: {exchange_count(len(opened.exchanges))}, {speed_text(s.replay_speed)}; "
            "answers come from the cassette, with no network and no key. `%qwen replay --stop` ends it."
        )
