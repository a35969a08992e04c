"""Phresh's administration commands.

    python -m app.cli create-superuser --email admin@example.com --username admin

creates a superuser, asking for the password (twice) on the terminal, or reading it from standard
input with --password-stdin. An existing user with that email is promoted instead (and
reactivated); their password is left alone.
"""

import argparse
import asyncio
import getpass
import sys

from databases import Database
from pydantic import ValidationError

from app.core.config import DATABASE_URL
from app.db.errors import EmailAlreadyTakenError, UsernameAlreadyTakenError
from app.db.repositories.users import UsersRepository
from app.models.user import UserCreate


class CommandError(Exception):
    """A message for the person at the terminal; the command exits with status 1."""


def read_password(*, from_stdin: bool) -> str:
    if from_stdin:
        return sys.stdin.readline().rstrip("\r\n")
    password = getpass.getpass("Password: ")
    if getpass.getpass("Password (again): ") != password:
        raise CommandError("the passwords do not match")
    return password


async def create_superuser(*, email: str, username: str, password_from_stdin: bool) -> str:
    database = Database(str(DATABASE_URL))
    await database.connect()
    try:
        user_repo = UsersRepository(database)
        user = await user_repo.get_user_by_email(email=email)
        if user is not None:
            promoted = await user_repo.make_superuser(id=user.id)
            if promoted is None:  # a deleted account's tombstone: nobody to promote
                raise CommandError("that email belongs to a deleted account")
            return f"promoted {promoted.username} <{promoted.email}> to superuser"
        password = read_password(from_stdin=password_from_stdin)
        try:
            new_user = UserCreate(email=email, username=username, password=password)
        except ValidationError as exc:
            problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
            raise CommandError(problems) from exc
        try:
            user = await user_repo.register_new_user(new_user=new_user)
        except EmailAlreadyTakenError as exc:
            raise CommandError("that email is already taken") from exc
        except UsernameAlreadyTakenError as exc:
            raise CommandError(f"the username {username!r} is already taken") from exc
        promoted = await user_repo.make_superuser(id=user.id)
        assert promoted is not None
        return f"created superuser {promoted.username} <{promoted.email}>"
    finally:
        await database.disconnect()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m app.cli", description="Phresh administration")
    commands = parser.add_subparsers(dest="command", required=True)
    create = commands.add_parser("create-superuser", help="create a superuser, or promote an existing user")
    create.add_argument("--email", required=True)
    create.add_argument("--username", required=True, help="used when the user is created")
    create.add_argument("--password-stdin", action="store_true", help="read the password from standard input")
    args = parser.parse_args(argv)

    try:
        message = asyncio.run(
            create_superuser(email=args.email, username=args.username, password_from_stdin=args.password_stdin)
        )
    except CommandError as exc:
        print(f"phresh: {exc}", file=sys.stderr)
        return 1
    print(message)
    return 0


if __name__ == "__main__":
    sys.exit(main())
