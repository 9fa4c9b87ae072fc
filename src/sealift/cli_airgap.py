"""``sealift sign``, and the options for air-gapped delivery that other commands take:
``--split SIZE`` (save, convert) and ``--allowed-signers`` / ``--signer`` (verify)."""

from __future__ import annotations

import getpass
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click

from sealift.errors import SealiftError, UsageError
from sealift.split import find_split, parse_size

if TYPE_CHECKING:  # sealift.signing loads cryptography: only commands that sign or check do
    from sealift.signing import Signer

F = TypeVar("F", bound=Callable[..., Any])


def _part_size(ctx: click.Context, param: click.Parameter, value: str | None) -> int | None:
    try:
        return None if value is None else parse_size(value)
    except UsageError as exc:
        raise click.BadParameter(str(exc)) from exc


SPLIT = click.option(
    "--split",
    callback=_part_size,
    metavar="SIZE",
    help="Write the archive as parts of at most SIZE (700M, 4G: binary units; 'fat32' is 4G "
    "less 1 byte): FILE.000, FILE.001, ... and FILE.parts.json, their sizes and sha256. "
    "`cat FILE.[0-9]*` joins them; sealift reads FILE or FILE.000 directly.",
)


def signature_options(function: F) -> F:
    """``--allowed-signers FILE`` and ``--signer IDENTITY``, for commands that read bundles."""
    function = click.option(
        "--signer",
        metavar="IDENTITY",
        help="Require the signer to be IDENTITY (matched against the principals in the "
        "allowed signers file, as ssh-keygen -Y verify -I does).",
    )(function)
    return click.option(
        "--allowed-signers",
        metavar="FILE",
        type=click.Path(dir_okay=False, path_type=Path),
        help="Require a valid SSH signature (ARCHIVE.sig, see `sealift sign`) by a key this "
        "OpenSSH allowed_signers file lists. Default: $SEALIFT_ALLOWED_SIGNERS, if set.",
    )(function)


def check_signature(
    archive: str, allowed_signers: Path | None, signer: str | None
) -> Signer | None:
    """Who signed ARCHIVE, when a signature is required; None when nobody asked for one."""
    from sealift.signing import ALLOWED_SIGNERS_VARIABLE, require_signature

    asked = allowed_signers is not None or os.environ.get(ALLOWED_SIGNERS_VARIABLE)
    if signer is not None and not asked:
        raise UsageError(f"--signer needs --allowed-signers (or {ALLOWED_SIGNERS_VARIABLE})")
    return require_signature(archive, allowed_signers, identity=signer)


def output_size(path: str) -> int:
    """Bytes written to ``path``: the file, or all parts of a split archive."""
    split = find_split(path)
    return split.read_index().total_size if split is not None else Path(path).stat().st_size


@click.command()
@click.argument("archive")
@click.option(
    "-k",
    "--key",
    required=True,
    metavar="KEY",
    type=click.Path(dir_okay=False, path_type=Path),
    help="An SSH private key file (ed25519, ecdsa, rsa), or a public key (.pub) whose private "
    "half is in ssh-agent.",
)
@click.option("-q", "--quiet", is_flag=True, help="Print nothing on success.")
def sign(archive: str, key: Path, quiet: bool) -> None:
    """Sign ARCHIVE with your SSH key: writes ARCHIVE.sig.

    The signature is OpenSSH's own (SSHSIG, namespace "sealift", sha512) over the archive's
    bytes, or over all its parts in order when it was written with --split. The key may be in
    ssh-agent; an encrypted key file asks for its passphrase on the terminal. Check it with
    `sealift verify ARCHIVE --allowed-signers FILE`, or with stock OpenSSH:

    \b
      ssh-keygen -Y verify -f allowed_signers -I SIGNER -n sealift \\
          -s stack.tar.sig < stack.tar
      cat stack.tar.[0-9]* | ssh-keygen -Y verify ... -s stack.tar.sig     # split archives

    \b
    An allowed_signers line: SIGNER namespaces="sealift" ssh-ed25519 AAAA...
    """
    from sealift.cli import errors_to_exit  # cli imports this module first
    from sealift.signing import sign_bundle

    with errors_to_exit():
        ask = _ask_passphrase if _has_terminal() else None
        written, signed_with = sign_bundle(archive, key, ask_passphrase=ask)
        if not quiet:
            click.echo(f"Signed {archive} with {signed_with}: {written}")


def _has_terminal() -> bool:
    try:
        os.close(os.open("/dev/tty", os.O_RDWR | os.O_NOCTTY))
    except OSError:
        return False
    return True


def _ask_passphrase(path: Path) -> bytes:
    try:
        return getpass.getpass(f"Enter passphrase for {path}: ").encode()
    except EOFError as exc:
        raise SealiftError(f"no passphrase given for {path}") from exc


@click.command()
@click.argument("where", required=False, metavar="[ssh://[user@]host[:port]]")
@click.option(
    "-o", "--output", default="-", show_default=True, metavar="FILE|-", help="Where to write it."
)
@click.option(
    "-H",
    "--host",
    metavar="HOST",
    help="The local engine (default: DOCKER_HOST, the docker context, the socket).",
)
@click.option("--ssh-command", metavar="CMD", help="The ssh client (default: ssh).")
@click.option(
    "--json", "as_json", is_flag=True, help="Print a JSON summary on stdout (with -o FILE)."
)
def inventory(
    where: str | None, output: str, host: str | None, ssh_command: str | None, as_json: bool
) -> None:
    """Write what an engine holds (images, tags, IDs, layer diff_ids) as a small JSON file.

    Take it on the receiving side, carry it to the build box, and `sealift save ... --since
    FILE` writes an update that carries only the layers the site lacks. Without ssh://, the
    local engine (-H); with it, that host's docker over SSH (no sealift needed there).

    \b
    Examples:
      sealift inventory -o site.json
      sealift inventory ssh://deploy@edge1 -o edge1.json
    """
    from sealift.cli import errors_to_exit
    from sealift.ends.ssh import Ssh, SshTarget
    from sealift.ends.ssh import ssh_command as ssh_words
    from sealift.inventory import of_engine, of_remote

    with errors_to_exit():
        if as_json and output == "-":
            raise UsageError("--json needs -o FILE: with -o - the inventory itself is the JSON")
        if where is not None:
            held = of_remote(Ssh(SshTarget.parse(where), ssh_words(ssh_command)))
        else:
            from sealift.ends.engine import Engine

            held = of_engine(Engine(host))
        if output == "-":
            click.echo(held.to_json().decode(), nl=False)
            return
        from sealift.ends.archive import write_atomically

        write_atomically(Path(output), lambda out: out.write(held.to_json()))
        if as_json:
            summary = {
                "output": output,
                "created": held.created,
                "source": held.source,
                "containerd_store": held.containerd_store,
                "images": len(held.images),
                "layers": len({d for image in held.images for d in image.diff_ids}),
            }
            click.echo(json.dumps(summary))
