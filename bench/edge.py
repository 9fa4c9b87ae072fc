"""Stage "edge": update bench/app:1.0 -> 1.1 on a far engine over 100 Mbit/s and over 1 Mbit/s.

Every row goes over ssh through the update stage's rate-limited relay (bench/ssh_push.py: the
same sshd, the same byte counting, the same checks); only the link rate differs. Rows: sealift
push with deltas (the default) and with ``--no-delta``, the ``docker save | ssh | docker load``
pipe, and the classic hand-made delta: ``docker save`` of app:1.1 on the near side, ``rsync -z``
of that tar onto the far side's ``docker save`` tar of app:1.0 (already there, put back untimed
before each trial), then ``docker load`` of it there.

The docker pipe runs over 100 Mbit/s only: it sends the whole image (every layer), which over
1 Mbit/s would take longer than a whole bench run.
"""

from __future__ import annotations

import dataclasses
import shlex
import shutil
from collections.abc import Callable

from bench.contenders import Contender, Ctx, _dst_has_only_from
from bench.engines import UPDATE_TO, EngineKind
from bench.measure import Measurement
from bench.report import Check, Row
from bench.ssh_push import _after, _count_file, _host, _ssh_config, push_contenders

STAGE = "edge"
# The 1 Mbit/s rows take minutes each: one engine kind keeps the full run short.
KINDS: tuple[EngineKind, ...] = ("docker20",)
# pv's notation (k = 1024 bytes/s), as the update stage's 12500k.
FAST = ("100 Mbit/s", "12500k")
SLOW = ("1 Mbit/s", "125k")
PIPE = "docker save | ssh | docker load"
PUSH = "sealift push (sealift on the remote)"
NO_DELTA = "sealift push --no-delta (agent)"
RSYNC = "rsync old docker save tar → new, docker load"
BASELINE = f"{PIPE} [{FAST[0]}]"
# issue 14: an update of app:1.0 -> 1.1 costs at most this on the wire
WIRE_LIMIT = 64 * 1024
_RSYNC_KEY = "rsync"
_FAR_TAR = "edge-far/app.tar"
_NEAR_TAR = "edge-near/app.tar"


def _at_link(row: Contender, speed: tuple[str, str]) -> Contender:
    """``row`` (an update row over ssh) in this stage, with its relay at ``speed``."""
    label, rate = speed
    script = row.script

    def at_rate(ctx: Ctx) -> str:
        return script(dataclasses.replace(ctx, link=rate))

    return dataclasses.replace(
        row,
        stage=STAGE,
        name=f"{row.name} [{label}]",
        baseline=BASELINE,
        script=at_rate,
        kinds=KINDS,
    )


def _prepare_rsync(ctx: Ctx) -> dict[str, object]:
    facts = _dst_has_only_from(ctx)
    _host(ctx, "docker")
    _count_file(ctx, _RSYNC_KEY).unlink(missing_ok=True)
    far = ctx.work / _FAR_TAR
    far.parent.mkdir(exist_ok=True)
    (ctx.work / _NEAR_TAR).parent.mkdir(exist_ok=True)
    shutil.copyfile(ctx.artifacts["from-tar"], far)
    return facts


def _rsync(speed: tuple[str, str]) -> Contender:
    label, rate = speed

    def script(ctx: Ctx) -> str:
        server = _host(ctx, "docker")
        count = _count_file(ctx, _RSYNC_KEY)
        config = _ssh_config(dataclasses.replace(ctx, link=rate), server, count)
        ssh = f"ssh -F {shlex.quote(str(config))}"
        near, far = ctx.work / _NEAR_TAR, ctx.work / _FAR_TAR
        return "\n".join(
            (
                f"{ctx.docker} save -o {shlex.quote(str(near))} {UPDATE_TO}",
                f"rsync -z --rsync-path=/usr/bin/rsync -e {shlex.quote(ssh)} "
                f"{shlex.quote(str(near))} {server.alias}:{shlex.quote(str(far))}",
                f"{ssh} {server.alias} docker load -q -i {shlex.quote(str(far))}",
            )
        )

    after: Callable[[Ctx, Measurement], None] = _after(_RSYNC_KEY)
    return Contender(
        STAGE,
        f"{RSYNC} [{label}]",
        "rsync",
        BASELINE,
        script,
        outputs=lambda ctx: [ctx.work / _NEAR_TAR],
        prepare=_prepare_rsync,
        after=after,
        note="timed: docker save of app:1.1 to a tar, rsync -z of it over ssh onto the far "
        "side's tar of app:1.0, docker load there",
        kinds=KINDS,
    )


def contenders() -> list[Contender]:
    over_ssh = {row.name: row for row in push_contenders()}
    rows = [_at_link(over_ssh[PIPE], FAST)]
    for speed in (FAST, SLOW):
        rows += [_at_link(over_ssh[name], speed) for name in (PUSH, NO_DELTA)]
        rows.append(_rsync(speed))
    return rows


def checks(rows: dict[str, Row]) -> list[Check]:
    """Issue 14's bench targets, for the rows that ran."""
    out: list[Check] = []
    for speed in (FAST, SLOW):
        push = rows.get(f"{STAGE}:{PUSH} [{speed[0]}]")
        if push is not None:
            wire = push.num("bytes")
            out.append(
                Check(
                    "edge update ≤ 64 KiB on the wire",
                    push.contender.key,
                    wire / 1024 if wire is not None else None,
                    WIRE_LIMIT / 1024,
                    "KiB",
                )
            )
    slow_push = rows.get(f"{STAGE}:{PUSH} [{SLOW[0]}]")
    slow_plain = rows.get(f"{STAGE}:{NO_DELTA} [{SLOW[0]}]")
    if slow_push is not None and slow_plain is not None:
        a, b = slow_push.wall(), slow_plain.wall()
        out.append(
            Check(
                f"edge update wall over {SLOW[0]} ≤ 0.5x sealift --no-delta",
                slow_push.contender.key,
                a / b if a is not None and b else None,
                0.5,
                f"x {slow_plain.contender.name}",
            )
        )
    return out
