"""Conditional requests: the feed, a cleaning, the offers of a cleaning and the caller's cleanings
answer with a strong ETag, and a client that sends it back in If-None-Match gets 304 with no body
while the answer is the same, and the full answer as soon as anything in it changed."""

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import pytest
from databases import Database
from fastapi import FastAPI, status
from httpx import AsyncClient, Response
from pydantic import TypeAdapter

from app.db.repositories.cleanings import CleaningsRepository
from app.models.cleaning import CleaningCreate, CleaningInDB, CleaningPublic
from app.models.user import UserPublic
from tests.conftest import AnyUser, create_cleaning_with_offers, create_user

Clients = Callable[[AnyUser], AsyncClient]
CLEANINGS = TypeAdapter(list[CleaningPublic])
AWKWARD = 'quote " backslash \\ newline \n tab \t é ✓ 🧹 \u2028 end'


@dataclass(frozen=True)
class Answer:
    """Where a conditional answer is read, and by whom."""

    client: AsyncClient
    path: str
    params: dict[str, str | int] | None = None

    async def get(self, if_none_match: str | bytes | None = None) -> Response:
        headers = {} if if_none_match is None else {"If-None-Match": if_none_match}
        return await self.client.get(self.path, params=self.params, headers=headers)

    async def tag(self) -> str:
        res = await self.get()
        assert res.status_code == status.HTTP_200_OK, res.text
        return res.headers["etag"]


def feed_path(app: FastAPI) -> str:
    return app.url_path_for("feed:get-cleaning-feed-for-user")


def cleaning_path(app: FastAPI, cleaning: CleaningInDB | int) -> str:
    cleaning_id = cleaning if isinstance(cleaning, int) else cleaning.id
    return app.url_path_for("cleanings:get-cleaning-by-id", cleaning_id=cleaning_id)


def offers_path(app: FastAPI, cleaning: CleaningInDB | int) -> str:
    cleaning_id = cleaning if isinstance(cleaning, int) else cleaning.id
    return app.url_path_for("offers:list-offers-for-cleaning", cleaning_id=cleaning_id)


def mine_path(app: FastAPI) -> str:
    return app.url_path_for("cleanings:list-all-user-cleanings")


async def changes(answer: Answer, change: Callable[[], Awaitable[object]]) -> Response:
    """Make the change between two reads of the answer: the second read, sent with the first's tag,
    must be the full new answer under a new tag."""
    before = await answer.get()
    assert before.status_code == status.HTTP_200_OK, before.text
    assert (await answer.get(before.headers["etag"])).status_code == status.HTTP_304_NOT_MODIFIED
    await change()
    after = await answer.get(before.headers["etag"])
    assert after.status_code == status.HTTP_200_OK, after.text
    assert after.headers["etag"] != before.headers["etag"]
    assert after.content != before.content
    return after


@pytest.fixture
def answers(
    app: FastAPI, client_for: Clients, test_user2: UserPublic, test_cleaning_with_offers: CleaningInDB
) -> dict[str, Answer]:
    """Each conditional route, read by the owner of a cleaning with offers."""
    owner = client_for(test_user2)
    return {
        "feed": Answer(owner, feed_path(app)),
        "cleaning": Answer(owner, cleaning_path(app, test_cleaning_with_offers)),
        "offers": Answer(owner, offers_path(app, test_cleaning_with_offers)),
        "mine": Answer(owner, mine_path(app)),
    }


ROUTES = ("feed", "cleaning", "offers", "mine")


class TestAnUnchangedAnswer:
    @pytest.mark.parametrize("route", ROUTES)
    async def test_is_304_with_its_tag_and_no_body(self, answers: dict[str, Answer], route: str) -> None:
        answer = answers[route]
        first = await answer.get()
        assert first.status_code == status.HTTP_200_OK
        etag = first.headers["etag"]
        assert etag.startswith('"') and etag.endswith('"') and len(etag) == 34  # strong, not W/
        assert first.headers["cache-control"] == "private, no-cache"  # a user's answer, revalidated each time
        again = await answer.get(etag)
        assert again.status_code == status.HTTP_304_NOT_MODIFIED
        assert again.content == b""
        assert again.headers["etag"] == etag
        assert again.headers["cache-control"] == "private, no-cache"
        assert "content-type" not in again.headers
        later = await answer.get()
        assert (later.status_code, later.content, later.headers["etag"]) == (200, first.content, etag)

    @pytest.mark.parametrize("route", ROUTES)
    @pytest.mark.parametrize(
        "header",
        (
            "{tag}",
            "W/{tag}",  # If-None-Match compares weakly
            '"0123456789abcdef0123456789abcdef", {tag}',  # a list: any of them
            '  W/"nope" ,{tag}  ,"other"',
            "*",  # any answer at all
        ),
    )
    async def test_any_form_that_names_the_tag_is_304(
        self, answers: dict[str, Answer], route: str, header: str
    ) -> None:
        answer = answers[route]
        res = await answer.get(header.format(tag=await answer.tag()))
        assert res.status_code == status.HTTP_304_NOT_MODIFIED

    @pytest.mark.parametrize("route", ROUTES)
    @pytest.mark.parametrize(
        "header",
        (
            "",
            "W/",
            '"',
            "abc",
            '"abc"',
            "**",
            "*, {tag}",  # not a list of tags, and not * alone: ignored
            "{tag}x",
            "W/W/{tag}",
            '"' + "a" * 20_000 + '"',
            ", ".join(['"0123456789abcdef0123456789abcdef"'] * 500),
            b"\xff\xfe{tag}",
            "{tag_upper}",  # tags compare as they are written
        ),
    )
    async def test_a_header_that_does_not_name_it_gets_the_full_answer(
        self, answers: dict[str, Answer], route: str, header: str | bytes
    ) -> None:
        answer = answers[route]
        first = await answer.get()
        tag = first.headers["etag"]
        if isinstance(header, bytes):
            sent: str | bytes = header.replace(b"{tag}", tag.encode())
        else:
            sent = header.format(tag=tag, tag_upper=tag.upper())
            if sent.startswith("*,"):  # "{tag}" would be read as the list's one tag otherwise
                sent = '*, "0123456789abcdef0123456789abcdef"'
        res = await answer.get(sent)
        assert res.status_code == status.HTTP_200_OK
        assert res.content == first.content and res.headers["etag"] == tag

    async def test_without_if_none_match_the_tutorials_clients_get_the_answers_they_always_had(
        self,
        app: FastAPI,
        db: Database,
        client_for: Clients,
        test_user: UserPublic,
        test_user2: UserPublic,
    ) -> None:
        # What the routes answered before they wrote JSON in PostgreSQL: pydantic's JSON of the
        # repository's models, for cleanings with every kind of value (an owner with a filled-in
        # profile, one without an owner, prices with and without cents).
        await db.execute(
            "UPDATE profiles SET full_name = :text, bio = :text, image = 'https://example.com/a.png'"
            " WHERE user_id = :id",
            {"text": AWKWARD, "id": test_user.id},
        )
        repo = CleaningsRepository(db)
        ids = []
        for name, price in ((AWKWARD, "12.5"), ("plain", "100"), ("cents", "0.01")):
            created = await client_for(test_user).post(
                app.url_path_for("cleanings:create-cleaning"),
                json={"new_cleaning": {"name": name, "price": price, "description": AWKWARD}},
            )
            ids.append(created.json()["id"])
        await db.execute("UPDATE cleanings SET owner = NULL WHERE id = :id", {"id": ids[2]})
        reader = client_for(test_user2)
        for cleaning_id in ids:
            res = await reader.get(cleaning_path(app, cleaning_id))
            expected = await repo.get_cleaning_by_id(id=cleaning_id)
            assert expected is not None
            assert res.content == expected.model_dump_json().encode()
        res = await client_for(test_user).get(mine_path(app), params={"limit": 5})
        mine = await repo.list_all_user_cleanings(requesting_user=test_user, limit=5)
        assert len(mine) == 2
        assert res.content == CLEANINGS.dump_json([CleaningPublic.model_validate(c.model_dump()) for c in mine])


class TestEveryChangeToAnAnswerChangesItsTag:
    async def test_a_new_cleaning(self, app: FastAPI, answers: dict[str, Answer]) -> None:
        owner = answers["mine"].client

        async def post() -> None:
            body = {"new_cleaning": {"name": "new", "price": 1}}
            res = await owner.post(app.url_path_for("cleanings:create-cleaning"), json=body)
            assert res.status_code == status.HTTP_201_CREATED

        for route in ("feed", "mine"):
            await changes(answers[route], post)

    @pytest.mark.parametrize("route", ("feed", "cleaning", "mine"))
    async def test_an_update_of_a_cleaning(
        self, app: FastAPI, answers: dict[str, Answer], test_cleaning_with_offers: CleaningInDB, route: str
    ) -> None:
        async def update() -> None:
            path = cleaning_path(app, test_cleaning_with_offers)
            res = await answers[route].client.put(path, json={"cleaning_update": {"price": 12.5}})
            assert res.status_code == status.HTTP_200_OK

        after = await changes(answers[route], update)
        assert b"12.5" in after.content

    async def test_a_change_that_keeps_updated_at(
        self, db: Database, answers: dict[str, Answer], test_cleaning_with_offers: CleaningInDB
    ) -> None:
        # Two updates whose transactions started in the same microsecond write the same updated_at
        # (it is the transaction's start): the row's version tells them apart. Played here by an
        # update with the trigger that keeps updated_at switched off.
        async def quietly_rename() -> None:
            async with db.transaction():
                await db.execute("SET LOCAL session_replication_role = replica")
                await db.execute(
                    "UPDATE cleanings SET name = 'renamed' WHERE id = :id", {"id": test_cleaning_with_offers.id}
                )

        for route in ("feed", "cleaning", "mine"):
            before = await answers[route].get()
            await quietly_rename()
            after = await answers[route].get(before.headers["etag"])
            assert after.status_code == status.HTTP_200_OK and b"renamed" in after.content
            assert after.headers["etag"] != before.headers["etag"]

    async def test_a_deleted_cleaning(
        self, app: FastAPI, db: Database, answers: dict[str, Answer], test_user2: UserPublic
    ) -> None:
        owner = answers["mine"].client
        doomed = await CleaningsRepository(db).create_cleaning(
            new_cleaning=CleaningCreate(name="doomed", price=1.0), requesting_user=test_user2
        )
        doomed_answer = Answer(owner, cleaning_path(app, doomed))
        tag = await doomed_answer.tag()

        async def delete() -> None:
            res = await owner.delete(cleaning_path(app, doomed))
            assert res.status_code == status.HTTP_200_OK

        tags = {route: await answers[route].tag() for route in ("feed", "mine")}
        await delete()
        for route, old in tags.items():
            res = await answers[route].get(old)
            assert res.status_code == status.HTTP_200_OK and b"doomed" not in res.content
        gone = await doomed_answer.get(tag)
        assert gone.status_code == status.HTTP_404_NOT_FOUND
        gone = await doomed_answer.get("*")
        assert gone.status_code == status.HTTP_404_NOT_FOUND

    async def test_a_new_offer(
        self,
        app: FastAPI,
        db: Database,
        client_for: Clients,
        answers: dict[str, Answer],
        test_cleaning_with_offers: CleaningInDB,
    ) -> None:
        stranger = client_for(
            await create_user(db, email="new@example.com", username="newcomer", password="a-password")
        )

        async def offer() -> None:
            res = await stranger.post(offers_path(app, test_cleaning_with_offers))
            assert res.status_code == status.HTTP_201_CREATED

        await changes(answers["offers"], offer)

    async def test_an_accept_a_cancel_and_a_rescind(
        self,
        app: FastAPI,
        client_for: Clients,
        answers: dict[str, Answer],
        test_cleaning_with_offers: CleaningInDB,
        test_user3: UserPublic,
        test_user4: UserPublic,
    ) -> None:
        owner, offers = answers["offers"].client, answers["offers"]
        accept_path = app.url_path_for(
            "offers:accept-offer-from-user", cleaning_id=test_cleaning_with_offers.id, username=test_user3.username
        )

        async def accept() -> None:  # test_user3's is accepted, the others rejected
            assert (await owner.put(accept_path)).status_code == status.HTTP_200_OK

        after = await changes(offers, accept)
        assert b'"accepted"' in after.content and b'"rejected"' in after.content

        async def cancel() -> None:  # test_user3 backs out: the others are pending again
            res = await client_for(test_user3).put(offers_path(app, test_cleaning_with_offers))
            assert res.status_code == status.HTTP_200_OK

        after = await changes(offers, cancel)
        assert b'"cancelled"' in after.content and b'"rejected"' not in after.content

        async def rescind() -> None:
            res = await client_for(test_user4).delete(offers_path(app, test_cleaning_with_offers))
            assert res.status_code == status.HTTP_200_OK

        after = await changes(offers, rescind)
        assert test_user4.username.encode() not in after.content

    @pytest.mark.parametrize("change", ("profile", "username", "email"))
    async def test_a_change_to_an_embedded_owner(self, app: FastAPI, answers: dict[str, Answer], change: str) -> None:
        owner = answers["cleaning"].client
        for route in ("feed", "cleaning"):

            async def edit(route: str = route) -> None:
                if change == "profile":
                    path, body = "profiles:update-own-profile", {"profile_update": {"full_name": f"Full {route}"}}
                else:
                    value = f"{route}owner" if change == "username" else f"{route}owner@example.com"
                    path, body = "users:update-current-user", {"user_update": {change: value}}
                res = await owner.put(app.url_path_for(path), json=body)
                assert res.status_code == status.HTTP_200_OK, res.text

            await changes(answers[route], edit)

    @pytest.mark.parametrize("change", ("profile", "username", "email"))
    async def test_a_change_to_an_embedded_offerer(
        self, app: FastAPI, client_for: Clients, answers: dict[str, Answer], test_user3: UserPublic, change: str
    ) -> None:
        async def edit() -> None:
            if change == "profile":
                path, body = "profiles:update-own-profile", {"profile_update": {"bio": "I clean."}}
            else:
                value = "cleaner3" if change == "username" else "cleaner3@example.com"
                path, body = "users:update-current-user", {"user_update": {change: value}}
            res = await client_for(test_user3).put(app.url_path_for(path), json=body)
            assert res.status_code == status.HTTP_200_OK, res.text

        await changes(answers["offers"], edit)

    async def test_nothing_the_answer_does_not_show(
        self, app: FastAPI, client_for: Clients, answers: dict[str, Answer], test_user: UserPublic
    ) -> None:
        # Someone else's cleaning changes neither this cleaning nor its offers, nor the owner's list.
        tags = {route: await answers[route].tag() for route in ("cleaning", "offers", "mine")}
        res = await client_for(test_user).post(
            app.url_path_for("cleanings:create-cleaning"), json={"new_cleaning": {"name": "other", "price": 3}}
        )
        assert res.status_code == status.HTTP_201_CREATED
        for route, tag in tags.items():
            assert (await answers[route].get(tag)).status_code == status.HTTP_304_NOT_MODIFIED


class TestATagValidatesItsOwnAnswerOnly:
    @pytest.mark.parametrize("route", ROUTES)
    async def test_another_users_tag(
        self, client_for: Clients, answers: dict[str, Answer], test_user3: UserPublic, route: str
    ) -> None:
        # The same answer (a cleaning, the feed) or another one (their own cleanings): 200 either way.
        answer = answers[route]
        other = Answer(client_for(test_user3), answer.path, answer.params)
        res = await other.get(await answer.tag())
        expected = status.HTTP_403_FORBIDDEN if route == "offers" else status.HTTP_200_OK
        assert res.status_code == expected

    async def test_two_empty_lists_of_two_users(
        self, app: FastAPI, client_for: Clients, test_user3: UserPublic, test_user4: UserPublic
    ) -> None:
        first, second = Answer(client_for(test_user3), mine_path(app)), Answer(client_for(test_user4), mine_path(app))
        assert (await first.get()).content == (await second.get()).content == b"[]"
        assert (await second.get(await first.tag())).status_code == status.HTTP_200_OK

    @pytest.mark.parametrize(
        ("route", "pages"),
        (
            ("feed", ({"page_chunk_size": 2}, {"page_chunk_size": 3}, {"starting_date": "2100-01-01T00:00:00Z"})),
            ("mine", ({"limit": 1}, {"limit": 2}, {"after_id": 1_000_000, "limit": 1})),
            ("offers", ({"limit": 1}, {"limit": 2}, {"after_created_at": "2000-01-01T00:00:00Z", "limit": 1})),
        ),
    )
    async def test_another_pages_tag(
        self, answers: dict[str, Answer], route: str, pages: tuple[dict[str, str | int], ...]
    ) -> None:
        base = answers[route]
        tags = [await Answer(base.client, base.path, page).tag() for page in pages]
        assert len(set(tags)) == len(tags)
        assert (await Answer(base.client, base.path, pages[1]).get(tags[0])).status_code == status.HTTP_200_OK

    async def test_another_cleanings_tag(
        self, app: FastAPI, db: Database, answers: dict[str, Answer], test_user2: UserPublic, test_user3: UserPublic
    ) -> None:
        other = await create_cleaning_with_offers(db, test_user2, [test_user3])
        for route, path in (("cleaning", cleaning_path), ("offers", offers_path)):
            answer = answers[route]
            res = await answer.client.get(path(app, other), headers={"If-None-Match": await answer.tag()})
            assert res.status_code == status.HTTP_200_OK


class TestTheRoutesRefusalsAreUnchanged:
    @pytest.mark.parametrize("route", ROUTES)
    async def test_no_token_is_401_whatever_the_tag(
        self, client: AsyncClient, answers: dict[str, Answer], route: str
    ) -> None:
        answer = answers[route]
        for header in (await answer.tag(), "*"):
            res = await client.get(answer.path, headers={"If-None-Match": header})
            assert res.status_code == status.HTTP_401_UNAUTHORIZED
            assert "etag" not in res.headers

    @pytest.mark.parametrize("path", (cleaning_path, offers_path))
    @pytest.mark.parametrize("cleaning_id", (5_000_000, 2**31))
    async def test_a_missing_cleaning_is_404_even_for_any_answer(
        self, app: FastAPI, authorized_client: AsyncClient, path: Callable[[FastAPI, int], str], cleaning_id: int
    ) -> None:
        res = await authorized_client.get(path(app, cleaning_id), headers={"If-None-Match": "*"})
        assert res.status_code == status.HTTP_404_NOT_FOUND
        assert res.json() == {"detail": "No cleaning found with that id."}

    async def test_someone_elses_offers_are_403_even_with_the_owners_tag(
        self, client_for: Clients, answers: dict[str, Answer], test_user3: UserPublic
    ) -> None:
        offers = answers["offers"]
        for header in (await offers.tag(), "*"):
            res = await client_for(test_user3).get(offers.path, headers={"If-None-Match": header})
            assert res.status_code == status.HTTP_403_FORBIDDEN
            assert res.json() == {"detail": "Unable to access offers."}
            assert "etag" not in res.headers

    @pytest.mark.parametrize("path", (cleaning_path, offers_path))
    async def test_a_malformed_id_is_422(
        self, app: FastAPI, authorized_client: AsyncClient, path: Callable[[FastAPI, int], str]
    ) -> None:
        res = await authorized_client.get(path(app, 0), headers={"If-None-Match": "*"})
        assert res.status_code == status.HTTP_422_UNPROCESSABLE_CONTENT
