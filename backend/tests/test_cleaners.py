"""Finding cleaners (issue 24): GET /api/profiles/ lists every user with a completed job, with the
figures of Part 12's stats route, sorted by a Bayesian rating or by completed jobs, a page at a
time; the figures are kept per cleaner in the transaction of every change to the evaluations."""

import asyncio
import base64
import json
import random
import re
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from databases import Database
from fastapi import FastAPI, status
from httpx import AsyncClient

from app.api.routes.cleaners import CURSOR_OF_ANOTHER_SORT, INVALID_CURSOR
from app.db.admin import libpq_url, migrate, recreate_database, sibling_database
from app.db.repositories.cleaners import LIST_CLEANERS_QUERIES
from app.models.cleaner import PRIOR_MEAN, PRIOR_WEIGHT, CleanerCursor, CleanerSort, bayesian_rating
from app.models.cleaning import CleaningCreate
from app.models.evaluation import EvaluationCreate
from app.models.user import AnyUser, UserInDB
from tests.conftest import TEST_DATABASE_URL, create_cleaning_with_evaluated_offer_helper, create_user

Clients = Callable[[AnyUser], AsyncClient]
# (overall_rating, professionalism, completeness, efficiency, no_show)
Evaluation = tuple[int, int | None, int | None, int | None, bool]

PASSWORD = "a fine password"
MIGRATION = Path(__file__).parent.parent / "app/db/migrations/versions/4c8e1a6d9f27_cleaner_stats.py"
REVISION, BEFORE = "4c8e1a6d9f27", "3f7a9c2e5b14"

# What the stats are made of, recomputed from the evaluations themselves.
RECOMPUTED_STATS = """
    SELECT cleaner_id, count(*) AS total_evaluations, count(*) FILTER (WHERE no_show) AS total_no_show,
           sum(overall_rating) AS overall_rating_sum,
           array_agg(overall_rating ORDER BY overall_rating) AS ratings,
           coalesce(sum(professionalism), 0) AS professionalism_sum, count(professionalism) AS professionalism_count,
           coalesce(sum(completeness), 0) AS completeness_sum, count(completeness) AS completeness_count,
           coalesce(sum(efficiency), 0) AS efficiency_sum, count(efficiency) AS efficiency_count
    FROM cleaning_to_cleaner_evaluations GROUP BY cleaner_id ORDER BY cleaner_id
"""
KEPT_STATS = """
    SELECT cleaner_id, total_evaluations, total_no_show, overall_rating_sum,
           professionalism_sum, professionalism_count, completeness_sum, completeness_count,
           efficiency_sum, efficiency_count, zero_stars, one_stars, two_stars, three_stars, four_stars, five_stars
    FROM cleaner_stats ORDER BY cleaner_id
"""
STARS = ("zero_stars", "one_stars", "two_stars", "three_stars", "four_stars", "five_stars")


async def assert_table_agrees_with_the_evaluations(conn: asyncpg.Connection) -> None:
    """cleaner_stats holds exactly one row per cleaner with evaluations, and the right figures."""
    expected = []
    for row in await conn.fetch(RECOMPUTED_STATS):
        figures = {key: value for key, value in row.items() if key != "ratings"}
        figures |= {column: row["ratings"].count(stars) for stars, column in enumerate(STARS)}
        expected.append(figures)
    kept = [dict(row) for row in await conn.fetch(KEPT_STATS)]
    assert kept == expected


def list_path(app: FastAPI) -> str:
    return app.url_path_for("profiles:list-cleaners")


def stats_path(app: FastAPI, username: str) -> str:
    return app.url_path_for("evaluations:get-stats-for-cleaner", username=username)


@pytest.fixture
async def conn(db: Database) -> AsyncIterator[asyncpg.Connection]:
    """A connection of its own to the test database, beside the app's pool."""
    connection = await asyncpg.connect(libpq_url(TEST_DATABASE_URL))
    yield connection
    await connection.close()


@pytest.fixture
async def reader(db: Database) -> UserInDB:
    return await create_user(db, email="reader@example.com", username="reader", password=PASSWORD)


async def make_users(conn: asyncpg.Connection, count: int, prefix: str) -> list[int]:
    """`count` users with empty profiles, written directly (no password anyone could log in with)."""
    async with conn.transaction():
        rows = await conn.fetch(
            "INSERT INTO users (username, email, password, salt)"
            " SELECT $1 || g, $1 || g || '@example.com', '!', '' FROM generate_series(1, $2) g RETURNING id",
            prefix,
            count,
        )
        ids = [row["id"] for row in rows]
        await conn.execute("INSERT INTO profiles (user_id) SELECT unnest($1::int[])", ids)
    return ids


async def evaluate(conn: asyncpg.Connection, *, owner: int, cleaner: int, evaluations: list[Evaluation]) -> list[int]:
    """A cleaning of `owner` per evaluation, done by `cleaner` (offer completed) and evaluated so.
    The ids of the cleanings."""
    async with conn.transaction():
        rows = await conn.fetch(
            "INSERT INTO cleanings (name, price, cleaning_type, owner)"
            " SELECT 'job ' || g, 10, 'spot_clean', $1 FROM generate_series(1, $2) g RETURNING id",
            owner,
            len(evaluations),
        )
        cleanings = [row["id"] for row in rows]
        await conn.execute(
            "INSERT INTO user_offers_for_cleanings (user_id, cleaning_id, status)"
            " SELECT $1, unnest($2::int[]), 'completed'",
            cleaner,
            cleanings,
        )
        await conn.executemany(
            "INSERT INTO cleaning_to_cleaner_evaluations"
            " (cleaning_id, cleaner_id, overall_rating, professionalism, completeness, efficiency, no_show)"
            " VALUES ($1, $2, $3, $4, $5, $6, $7)",
            [(cleaning, cleaner, *evaluation) for cleaning, evaluation in zip(cleanings, evaluations, strict=True)],
        )
    return cleanings


async def accepted_job(conn: asyncpg.Connection, *, owner: int, cleaner: int) -> int:
    """A cleaning of `owner` whose offer from `cleaner` is accepted, not evaluated yet."""
    async with conn.transaction():
        cleaning: int = await conn.fetchval(
            "INSERT INTO cleanings (name, price, cleaning_type, owner)"
            " VALUES ('job', 10, 'spot_clean', $1) RETURNING id",
            owner,
        )
        await conn.execute(
            "INSERT INTO user_offers_for_cleanings (user_id, cleaning_id, status) VALUES ($1, $2, 'accepted')",
            cleaner,
            cleaning,
        )
    return cleaning


def rated(*overall: int) -> list[Evaluation]:
    return [(rating, None, None, None, False) for rating in overall]


def random_evaluation(rng: random.Random) -> Evaluation:
    def maybe() -> int | None:
        return rng.choice([None, 0, 1, 2, 3, 4, 5])

    return (rng.randint(0, 5), maybe(), maybe(), maybe(), rng.random() < 0.2)


async def every_page(client: AsyncClient, app: FastAPI, *, sort: str, limit: int) -> list[dict[str, Any]]:
    """Every cleaner, walking the pages with each page's cursor."""
    items: list[dict[str, Any]] = []
    params: dict[str, Any] = {"sort": sort, "limit": limit}
    while True:
        res = await client.get(list_path(app), params=params)
        assert res.status_code == status.HTTP_200_OK, res.text
        page = res.json()
        assert len(page["cleaners"]) <= limit
        items += page["cleaners"]
        if page["next_cursor"] is None:
            return items
        assert len(page["cleaners"]) == limit  # a next page only after a full one
        params["cursor"] = page["next_cursor"]


def positional(query: str, values: dict[str, Any]) -> tuple[str, list[Any]]:
    """A statement with `:named` parameters as asyncpg takes it: `$n`, and the values in order."""
    names: list[str] = []

    def number(match: re.Match[str]) -> str:
        if match[1] not in names:
            names.append(match[1])
        return f"${names.index(match[1]) + 1}"

    text = re.sub(r"(?<!:):([a-z_]+)", number, query.strip().rstrip(";"))
    return text, [values[name] for name in names]


class TestFindingCleaners:
    async def test_a_cleaner_is_listed_with_their_profile_rating_and_the_stats_routes_figures(
        self, app: FastAPI, client_for: Clients, db: Database, reader: UserInDB
    ) -> None:
        owner = await create_user(db, email="owner@example.com", username="owner", password=PASSWORD)
        cleaner = await create_user(db, email="cleaner@example.com", username="Cleaner_1", password=PASSWORD)
        await client_for(cleaner).put(
            app.url_path_for("profiles:update-own-profile"),
            json={"profile_update": {"full_name": "Clea Ner", "bio": "Windows a speciality."}},
        )
        for i, (overall, professionalism) in enumerate([(5, 4), (2, None)]):
            await create_cleaning_with_evaluated_offer_helper(
                db,
                owner,
                cleaner,
                CleaningCreate(name=f"job {i}", price=20, cleaning_type="spot_clean"),
                EvaluationCreate(overall_rating=overall, professionalism=professionalism, no_show=i == 1),
            )
        client = client_for(reader)

        res = await client.get(list_path(app))

        assert res.status_code == status.HTTP_200_OK
        page = res.json()
        assert page["next_cursor"] is None
        [item] = page["cleaners"]  # the owner and the reader have no completed job: not cleaners
        assert item["cleaner"]["id"] == cleaner.id
        assert item["cleaner"]["username"] == "Cleaner_1"
        assert item["cleaner"]["profile"]["full_name"] == "Clea Ner"
        assert item["cleaner"]["profile"]["bio"] == "Windows a speciality."
        assert "password" not in item["cleaner"] and "salt" not in item["cleaner"]
        assert item["rating"] == (PRIOR_WEIGHT * PRIOR_MEAN + 7) / (PRIOR_WEIGHT + 2)
        stats = (await client.get(stats_path(app, "cleaner_1"))).json()
        assert item["stats"] == stats
        assert stats["total_evaluations"] == 2 and stats["total_no_show"] == 1
        assert (stats["min_overall_rating"], stats["max_overall_rating"]) == (2, 5)
        assert (stats["avg_professionalism"], stats["avg_completeness"]) == (4.0, None)

    async def test_nobody_without_an_evaluated_job_is_listed(
        self, app: FastAPI, client_for: Clients, db: Database, reader: UserInDB, conn: asyncpg.Connection
    ) -> None:
        owner, offerer, accepted = await make_users(conn, 3, "user")
        cleaning = (await evaluate(conn, owner=owner, cleaner=accepted, evaluations=rated(4)))[0]
        # an offer alone, and an accepted offer not evaluated yet, make nobody a cleaner
        await conn.execute(
            "INSERT INTO user_offers_for_cleanings (user_id, cleaning_id, status) VALUES ($1, $2, 'rejected')",
            offerer,
            cleaning,
        )
        res = await client_for(reader).get(list_path(app))
        assert [item["cleaner"]["id"] for item in res.json()["cleaners"]] == [accepted]

    async def test_a_deactivated_cleaner_is_not_listed(
        self, app: FastAPI, client_for: Clients, db: Database, reader: UserInDB, conn: asyncpg.Connection
    ) -> None:
        owner, kept, deactivated = await make_users(conn, 3, "user")
        await evaluate(conn, owner=owner, cleaner=kept, evaluations=rated(3))
        await evaluate(conn, owner=owner, cleaner=deactivated, evaluations=rated(5))
        await conn.execute("UPDATE users SET is_active = false WHERE id = $1", deactivated)
        res = await client_for(reader).get(list_path(app))
        assert [item["cleaner"]["id"] for item in res.json()["cleaners"]] == [kept]

    async def test_only_for_a_logged_in_user(self, app: FastAPI, client: AsyncClient) -> None:
        res = await client.get(list_path(app))
        assert res.status_code == status.HTTP_401_UNAUTHORIZED

    async def test_served_at_api_profiles(self, app: FastAPI) -> None:
        assert list_path(app) == "/api/profiles/"


class TestTheRating:
    def test_the_models_prior_is_the_migrations(self) -> None:
        source = MIGRATION.read_text()
        assert f"PRIOR_MEAN = {PRIOR_MEAN}\n" in source
        assert f"PRIOR_WEIGHT = {PRIOR_WEIGHT}\n" in source

    async def test_one_five_star_evaluation_does_not_beat_a_hundred_of_four_and_a_half(
        self, app: FastAPI, client_for: Clients, reader: UserInDB, conn: asyncpg.Connection
    ) -> None:
        owner, newcomer, veteran, poor = await make_users(conn, 4, "user")
        await evaluate(conn, owner=owner, cleaner=newcomer, evaluations=rated(5))
        await evaluate(conn, owner=owner, cleaner=veteran, evaluations=rated(*[4, 5] * 50))
        await evaluate(conn, owner=owner, cleaner=poor, evaluations=rated(2, 1))

        res = await client_for(reader).get(list_path(app), params={"sort": "rating"})

        items = res.json()["cleaners"]
        assert [item["cleaner"]["id"] for item in items] == [veteran, newcomer, poor]
        assert [item["stats"]["avg_overall_rating"] for item in items] == [4.5, 5.0, 1.5]
        assert [item["rating"] for item in items] == [
            bayesian_rating(overall_rating_sum=450, total_evaluations=100),
            bayesian_rating(overall_rating_sum=5, total_evaluations=1),
            bayesian_rating(overall_rating_sum=3, total_evaluations=2),
        ]
        assert items[1]["rating"] == pytest.approx(3.3333333) and items[0]["rating"] == pytest.approx(4.4285714)

    @pytest.mark.parametrize("count", [1, 3, 10, 1000])
    async def test_many_perfect_evaluations_approach_five_and_never_pass_it(
        self, app: FastAPI, client_for: Clients, reader: UserInDB, conn: asyncpg.Connection, count: int
    ) -> None:
        owner, cleaner = await make_users(conn, 2, "user")
        await evaluate(conn, owner=owner, cleaner=cleaner, evaluations=rated(*[5] * count))
        [item] = (await client_for(reader).get(list_path(app))).json()["cleaners"]
        assert item["rating"] == (PRIOR_WEIGHT * PRIOR_MEAN + 5 * count) / (PRIOR_WEIGHT + count)
        assert PRIOR_MEAN < item["rating"] < 5

    async def test_by_completed_jobs_the_busiest_come_first_whatever_their_ratings(
        self, app: FastAPI, client_for: Clients, reader: UserInDB, conn: asyncpg.Connection
    ) -> None:
        owner, busy, busier, idle = await make_users(conn, 4, "user")
        await evaluate(conn, owner=owner, cleaner=busy, evaluations=rated(1, 1, 1))
        await evaluate(conn, owner=owner, cleaner=busier, evaluations=rated(0, 2, 0, 1))
        await evaluate(conn, owner=owner, cleaner=idle, evaluations=rated(5))
        res = await client_for(reader).get(list_path(app), params={"sort": "completed_jobs"})
        items = res.json()["cleaners"]
        assert [item["cleaner"]["id"] for item in items] == [busier, busy, idle]
        assert [item["stats"]["total_evaluations"] for item in items] == [4, 3, 1]

    @pytest.mark.parametrize("sort", ["rating", "completed_jobs"])
    async def test_ties_go_to_the_newest_user_first(
        self, app: FastAPI, client_for: Clients, reader: UserInDB, conn: asyncpg.Connection, sort: str
    ) -> None:
        owner, *cleaners = await make_users(conn, 4, "user")
        for cleaner in cleaners:
            await evaluate(conn, owner=owner, cleaner=cleaner, evaluations=rated(4, 2))
        res = await client_for(reader).get(list_path(app), params={"sort": sort})
        assert [item["cleaner"]["id"] for item in res.json()["cleaners"]] == sorted(cleaners, reverse=True)


class TestPaging:
    @pytest.mark.parametrize("sort", ["rating", "completed_jobs"])
    @pytest.mark.parametrize("limit", [1, 3, 7])
    async def test_the_pages_hold_every_cleaner_once_in_order_ties_included(
        self, app: FastAPI, client_for: Clients, reader: UserInDB, conn: asyncpg.Connection, sort: str, limit: int
    ) -> None:
        owner, *cleaners = await make_users(conn, 22, "user")
        # few distinct records, so that many cleaners share a rating and a number of jobs
        records = [rated(4), rated(4, 5), rated(3, 3, 3), rated(5)]
        for i, cleaner in enumerate(cleaners):
            await evaluate(conn, owner=owner, cleaner=cleaner, evaluations=records[i % len(records)])
        client = client_for(reader)

        items = await every_page(client, app, sort=sort, limit=limit)

        whole = (await client.get(list_path(app), params={"sort": sort, "limit": 50})).json()["cleaners"]
        assert items == whole
        ids = [item["cleaner"]["id"] for item in items]
        assert sorted(ids) == sorted(cleaners)
        key = "rating" if sort == "rating" else "total_evaluations"
        keys = [(item["rating"] if key == "rating" else item["stats"][key], item["cleaner"]["id"]) for item in items]
        assert keys == sorted(keys, reverse=True)

    async def test_a_page_is_20_by_default_and_50_at_most(
        self, app: FastAPI, client_for: Clients, reader: UserInDB, conn: asyncpg.Connection
    ) -> None:
        owner, *cleaners = await make_users(conn, 52, "user")
        for cleaner in cleaners:
            await evaluate(conn, owner=owner, cleaner=cleaner, evaluations=rated(4))
        client = client_for(reader)
        assert len((await client.get(list_path(app))).json()["cleaners"]) == 20
        page = (await client.get(list_path(app), params={"limit": 50})).json()
        assert len(page["cleaners"]) == 50 and page["next_cursor"] is not None
        rest = (await client.get(list_path(app), params={"limit": 50, "cursor": page["next_cursor"]})).json()
        assert len(rest["cleaners"]) == 1 and rest["next_cursor"] is None

    async def test_a_cleaner_who_moves_up_meanwhile_is_not_shown_twice(
        self, app: FastAPI, client_for: Clients, reader: UserInDB, conn: asyncpg.Connection
    ) -> None:
        owner, *cleaners = await make_users(conn, 6, "user")
        for rating, cleaner in zip([5, 4, 3, 2, 1], cleaners, strict=True):
            await evaluate(conn, owner=owner, cleaner=cleaner, evaluations=rated(rating))
        client = client_for(reader)
        first = (await client.get(list_path(app), params={"limit": 2})).json()
        # the last cleaner earns many five stars and passes everyone on the first page
        await evaluate(conn, owner=owner, cleaner=cleaners[4], evaluations=rated(*[5] * 20))
        rest = (await client.get(list_path(app), params={"limit": 10, "cursor": first["next_cursor"]})).json()
        ids = [item["cleaner"]["id"] for item in first["cleaners"] + rest["cleaners"]]
        assert ids == cleaners[:4]  # after the cursor only: what the first page had already passed

    def test_a_cursor_reads_back_exactly(self) -> None:
        for key in [3.3333333333333335, 4.428571428571429, 0.1 + 0.2, 5.0, 0.0]:
            cursor = CleanerCursor(sort=CleanerSort.rating, key=key, id=12)
            assert CleanerCursor.decode(cursor.encode()) == cursor
        cursor = CleanerCursor(sort=CleanerSort.completed_jobs, key=2**31 - 1, id=2**31 - 1)
        assert CleanerCursor.decode(cursor.encode()) == cursor

    async def test_a_cursor_of_the_other_sort_is_refused(
        self, app: FastAPI, client_for: Clients, reader: UserInDB, conn: asyncpg.Connection
    ) -> None:
        owner, *cleaners = await make_users(conn, 3, "user")
        for cleaner in cleaners:
            await evaluate(conn, owner=owner, cleaner=cleaner, evaluations=rated(4))
        client = client_for(reader)
        page = (await client.get(list_path(app), params={"sort": "rating", "limit": 1})).json()
        res = await client.get(
            list_path(app), params={"sort": "completed_jobs", "limit": 1, "cursor": page["next_cursor"]}
        )
        assert res.status_code == status.HTTP_400_BAD_REQUEST
        assert res.json() == {"detail": CURSOR_OF_ANOTHER_SORT}
        # and without `sort`, the cursor of the default sort goes on
        res = await client.get(list_path(app), params={"cursor": page["next_cursor"]})
        assert [item["cleaner"]["id"] for item in res.json()["cleaners"]] == sorted(cleaners, reverse=True)[1:]

    @staticmethod
    def forged(*parts: Any) -> str:
        return base64.urlsafe_b64encode(json.dumps(list(parts)).encode()).decode().rstrip("=")

    @pytest.mark.parametrize(
        "cursor",
        [
            "x",
            "AAAA",
            "bm90IGpzb24",  # "not json"
            forged("rating", 4.5),
            forged("rating", 4.5, 1, 2),
            forged("stars", 4.5, 1),
            forged("rating", "4.5", 1),
            forged("rating", 6.0, 1),
            forged("rating", -1.0, 1),
            forged("rating", 4, 1),  # the rating is a float: an int is no cursor of the list
            forged("rating", 4.5, 0),
            forged("rating", 4.5, 2**31),
            forged("rating", 4.5, True),
            forged("rating", 4.5, 1.0),
            forged("completed_jobs", 0, 1),
            forged("completed_jobs", 2**31, 1),
            forged("completed_jobs", 3.0, 1),
            forged("completed_jobs", 10**40, 1),
            forged({"a": 1}, 1, 1),
            base64.urlsafe_b64encode(b'["rating", NaN, 1]').decode().rstrip("="),
            base64.urlsafe_b64encode(b'["rating", Infinity, 1]').decode().rstrip("="),
            base64.urlsafe_b64encode(b"\xff\xfe").decode().rstrip("="),
        ],
    )
    async def test_a_cursor_the_list_did_not_write_is_a_400(
        self, app: FastAPI, client_for: Clients, reader: UserInDB, cursor: str
    ) -> None:
        res = await client_for(reader).get(list_path(app), params={"cursor": cursor})
        assert res.status_code == status.HTTP_400_BAD_REQUEST, res.text
        assert res.json() == {"detail": INVALID_CURSOR}

    @pytest.mark.parametrize(
        "params",
        [
            {"sort": "stars"},
            {"sort": ""},
            {"limit": 0},
            {"limit": 51},
            {"limit": "many"},
            {"cursor": ""},
            {"cursor": "not base64!"},
            {"cursor": "A" * 201},
        ],
    )
    async def test_bad_parameters_are_a_422(
        self, app: FastAPI, client_for: Clients, reader: UserInDB, params: dict[str, Any]
    ) -> None:
        res = await client_for(reader).get(list_path(app), params=params)
        assert res.status_code == status.HTTP_422_UNPROCESSABLE_CONTENT, res.text


class TestTheFiguresAgree:
    async def test_on_random_data_every_cleaners_figures_are_the_stats_routes(
        self, app: FastAPI, client_for: Clients, db: Database, reader: UserInDB, conn: asyncpg.Connection
    ) -> None:
        rng = random.Random(24)
        owners = await make_users(conn, 3, "owner")
        cleaners = await make_users(conn, 40, "cleaner")
        cleanings: list[int] = []
        for cleaner in cleaners:
            for owner in owners:
                count = rng.choice([0, 0, 1, 2, 3, 7, 30])
                evaluations = [random_evaluation(rng) for _ in range(count)]
                cleanings += await evaluate(conn, owner=owner, cleaner=cleaner, evaluations=evaluations)
        # and some go again, as a deleted cleaning's or offer's do
        gone = rng.sample(cleanings, len(cleanings) // 5)
        await conn.execute("DELETE FROM cleanings WHERE id = ANY($1::int[])", gone[: len(gone) // 2])
        await conn.execute(
            "DELETE FROM user_offers_for_cleanings WHERE cleaning_id = ANY($1::int[])", gone[len(gone) // 2 :]
        )
        await assert_table_agrees_with_the_evaluations(conn)
        client = client_for(reader)

        for sort in ("rating", "completed_jobs"):
            items = await every_page(client, app, sort=sort, limit=9)
            with_evaluations = await conn.fetch("SELECT DISTINCT cleaner_id AS id FROM cleaning_to_cleaner_evaluations")
            assert sorted(item["cleaner"]["id"] for item in items) == sorted(row["id"] for row in with_evaluations)
            for item in items:
                stats = await client.get(stats_path(app, item["cleaner"]["username"]))
                assert item["stats"] == stats.json()
                assert item["rating"] == bayesian_rating(
                    overall_rating_sum=round(stats.json()["avg_overall_rating"] * stats.json()["total_evaluations"]),
                    total_evaluations=stats.json()["total_evaluations"],
                )


class TestConcurrentChanges:
    async def test_evaluations_of_one_cleaner_at_once_all_count(
        self, app: FastAPI, client_for: Clients, db: Database, reader: UserInDB, conn: asyncpg.Connection
    ) -> None:
        cleaner = await create_user(db, email="cleaner@example.com", username="cleaner", password=PASSWORD)
        owners = [
            await create_user(db, email=f"owner{i}@example.com", username=f"owner{i}", password=PASSWORD)
            for i in range(8)
        ]
        cleanings = [await accepted_job(conn, owner=owner.id, cleaner=cleaner.id) for owner in owners]

        async def evaluation(owner: UserInDB, cleaning: int, rating: int) -> int:
            path = app.url_path_for(
                "evaluations:create-evaluation-for-cleaner", cleaning_id=cleaning, username="cleaner"
            )
            res = await client_for(owner).post(path, json={"evaluation_create": {"overall_rating": rating}})
            return res.status_code

        codes = await asyncio.gather(
            *(
                evaluation(owner, cleaning, i % 6)
                for i, (owner, cleaning) in enumerate(zip(owners, cleanings, strict=True))
            )
        )
        assert codes == [status.HTTP_201_CREATED] * 8
        client = client_for(reader)
        [item] = (await client.get(list_path(app))).json()["cleaners"]
        assert item["stats"]["total_evaluations"] == 8
        assert item["stats"] == (await client.get(stats_path(app, "cleaner"))).json()
        await assert_table_agrees_with_the_evaluations(conn)

    async def test_a_change_waits_for_the_one_before_it_and_counts_on_top(
        self, db: Database, conn: asyncpg.Connection
    ) -> None:
        owner, cleaner = await make_users(conn, 2, "user")
        first, second, third = await evaluate(conn, owner=owner, cleaner=cleaner, evaluations=rated(5, 5, 5))
        await conn.execute("DELETE FROM user_offers_for_cleanings WHERE cleaning_id IN ($1, $2)", first, second)
        other = await asyncpg.connect(libpq_url(TEST_DATABASE_URL))
        insert = (
            "INSERT INTO user_offers_for_cleanings (user_id, cleaning_id, status) VALUES ($1, $2, 'completed');"
            "INSERT INTO cleaning_to_cleaner_evaluations (cleaning_id, cleaner_id, overall_rating) VALUES ($2, $1, 1)"
        )
        try:
            # two evaluations at once: the second waits for the first's row lock, then adds to it
            async with conn.transaction():
                await conn.execute(insert.replace("$1", str(cleaner)).replace("$2", str(first)))
                waiting = asyncio.create_task(
                    other.execute(insert.replace("$1", str(cleaner)).replace("$2", str(second)))
                )
                await asyncio.sleep(0.3)
                assert not waiting.done()
            await waiting
            assert (
                await conn.fetchval("SELECT total_evaluations FROM cleaner_stats WHERE cleaner_id = $1", cleaner) == 3
            )
            # the cleaner's row goes with their last evaluation while another comes: it comes back with it
            await conn.execute("DELETE FROM user_offers_for_cleanings WHERE cleaning_id IN ($1, $2)", first, second)
            async with conn.transaction():
                await conn.execute("DELETE FROM cleaning_to_cleaner_evaluations WHERE cleaning_id = $1", third)
                assert await conn.fetchval("SELECT count(*) FROM cleaner_stats WHERE cleaner_id = $1", cleaner) == 0
                waiting = asyncio.create_task(
                    other.execute(insert.replace("$1", str(cleaner)).replace("$2", str(first)))
                )
                await asyncio.sleep(0.3)
                assert not waiting.done()
            await waiting
        finally:
            await other.close()
        row = await conn.fetchrow(
            "SELECT total_evaluations, one_stars, five_stars FROM cleaner_stats WHERE cleaner_id = $1", cleaner
        )
        assert tuple(row) == (1, 1, 0)
        await assert_table_agrees_with_the_evaluations(conn)

    async def test_a_rolled_back_evaluation_counts_nothing(self, conn: asyncpg.Connection) -> None:
        owner, cleaner = await make_users(conn, 2, "user")
        await evaluate(conn, owner=owner, cleaner=cleaner, evaluations=rated(4))
        transaction = conn.transaction()
        await transaction.start()
        await evaluate(conn, owner=owner, cleaner=cleaner, evaluations=rated(0, 0))
        await transaction.rollback()
        row = await conn.fetchrow(
            "SELECT total_evaluations, zero_stars FROM cleaner_stats WHERE cleaner_id = $1", cleaner
        )
        assert tuple(row) == (1, 0)


class TestDeletionsKeepTheFiguresRight:
    async def test_a_deleted_cleaner_leaves_the_list_and_the_table(
        self, app: FastAPI, client_for: Clients, db: Database, reader: UserInDB, conn: asyncpg.Connection
    ) -> None:
        owner = await create_user(db, email="owner@example.com", username="owner", password=PASSWORD)
        leaving = await create_user(db, email="leaving@example.com", username="leaving", password=PASSWORD)
        staying = await create_user(db, email="staying@example.com", username="staying", password=PASSWORD)
        await evaluate(conn, owner=owner.id, cleaner=leaving.id, evaluations=rated(5, 4, 4))
        await evaluate(conn, owner=owner.id, cleaner=staying.id, evaluations=rated(3))

        res = await client_for(leaving).request(
            "DELETE", app.url_path_for("users:delete-current-user"), json={"account_deletion": {"password": PASSWORD}}
        )

        assert res.status_code == status.HTTP_200_OK, res.text
        items = (await client_for(reader).get(list_path(app))).json()["cleaners"]
        assert [item["cleaner"]["id"] for item in items] == [staying.id]
        assert await conn.fetchval("SELECT count(*) FROM cleaner_stats WHERE cleaner_id = $1", leaving.id) == 0
        await assert_table_agrees_with_the_evaluations(conn)

    async def test_an_owners_deletion_keeps_the_evaluations_they_gave(
        self, app: FastAPI, client_for: Clients, db: Database, reader: UserInDB, conn: asyncpg.Connection
    ) -> None:
        owner = await create_user(db, email="owner@example.com", username="owner", password=PASSWORD)
        cleaner = await create_user(db, email="cleaner@example.com", username="cleaner", password=PASSWORD)
        await evaluate(conn, owner=owner.id, cleaner=cleaner.id, evaluations=rated(5, 2))
        client = client_for(reader)
        before = (await client.get(list_path(app))).json()

        res = await client_for(owner).request(
            "DELETE", app.url_path_for("users:delete-current-user"), json={"account_deletion": {"password": PASSWORD}}
        )

        assert res.status_code == status.HTTP_200_OK, res.text
        assert (await client.get(list_path(app))).json() == before
        await assert_table_agrees_with_the_evaluations(conn)

    async def test_a_deleted_cleaning_offer_or_user_takes_its_evaluations_out(
        self, app: FastAPI, client_for: Clients, reader: UserInDB, conn: asyncpg.Connection
    ) -> None:
        owner, cleaner, gone = await make_users(conn, 3, "user")
        first, second, _ = await evaluate(conn, owner=owner, cleaner=cleaner, evaluations=rated(0, 5, 3))
        await evaluate(conn, owner=owner, cleaner=gone, evaluations=rated(4))
        client = client_for(reader)

        await conn.execute("DELETE FROM cleanings WHERE id = $1", first)  # cascades to the offer and its evaluation
        [item] = [i for i in (await client.get(list_path(app))).json()["cleaners"] if i["cleaner"]["id"] == cleaner]
        assert (item["stats"]["total_evaluations"], item["stats"]["min_overall_rating"]) == (2, 3)
        assert item["stats"] == (await client.get(stats_path(app, item["cleaner"]["username"]))).json()

        await conn.execute("DELETE FROM user_offers_for_cleanings WHERE cleaning_id = $1", second)
        await conn.execute("DELETE FROM users WHERE id = $1", gone)
        [item] = (await client.get(list_path(app))).json()["cleaners"]
        assert (item["cleaner"]["id"], item["stats"]["total_evaluations"], item["stats"]["max_overall_rating"]) == (
            cleaner,
            1,
            3,
        )
        await assert_table_agrees_with_the_evaluations(conn)


class TestEachSortReadsAnIndex:
    @pytest.mark.parametrize(
        ("sort", "after_cursor", "index"),
        [
            (CleanerSort.rating, False, "ix_cleaner_stats_rating"),
            (CleanerSort.rating, True, "ix_cleaner_stats_rating"),
            (CleanerSort.completed_jobs, False, "ix_cleaner_stats_completed_jobs"),
            (CleanerSort.completed_jobs, True, "ix_cleaner_stats_completed_jobs"),
        ],
    )
    async def test_a_page_is_a_range_scan_of_its_sorts_index(
        self, conn: asyncpg.Connection, sort: CleanerSort, after_cursor: bool, index: str
    ) -> None:
        cleaners = await make_users(conn, 300, "user")
        for i, cleaner in enumerate(cleaners):
            await conn.execute(
                "INSERT INTO cleaner_stats (cleaner_id, total_evaluations, five_stars, overall_rating_sum)"
                " VALUES ($1, $2, $2, 5 * $2)",
                cleaner,
                1 + i % 17,
            )
        await conn.execute("ANALYZE cleaner_stats; ANALYZE users; ANALYZE profiles")
        values: dict[str, Any] = {"limit": 21}
        if after_cursor:
            values |= {"after_key": 4.5 if sort is CleanerSort.rating else 10, "after_id": cleaners[150]}
        query, args = positional(LIST_CLEANERS_QUERIES[sort, after_cursor], values)
        async with conn.transaction():
            # priced out, so that the plan shows the index PostgreSQL can use whatever the table's size
            await conn.execute("SET LOCAL enable_seqscan = off")
            plan = "\n".join(row[0] for row in await conn.fetch("EXPLAIN " + query, *args))
        assert f"Index Scan Backward using {index} on cleaner_stats" in plan, plan
        assert "Sort" not in plan, plan  # read in the index's order, not sorted afterwards
        assert "Seq Scan on cleaner_stats" not in plan, plan


class TestTheMigration:
    async def test_the_revision_counts_the_evaluations_there_are_and_goes_down_and_up(self) -> None:
        url = sibling_database(TEST_DATABASE_URL, "cleaner_stats")
        await recreate_database(url)
        migrate(url, BEFORE)
        conn = await asyncpg.connect(libpq_url(url))
        try:
            rng = random.Random(4)
            owner, *cleaners = await make_users(conn, 6, "user")
            for cleaner in cleaners[1:]:
                await evaluate(
                    conn,
                    owner=owner,
                    cleaner=cleaner,
                    evaluations=[random_evaluation(rng) for _ in range(rng.randint(1, 9))],
                )

            migrate(url, REVISION)

            assert await conn.fetchval("SELECT count(*) FROM cleaner_stats") == 4
            await assert_table_agrees_with_the_evaluations(conn)
            # and from now on the trigger keeps it
            await evaluate(conn, owner=owner, cleaner=cleaners[0], evaluations=[random_evaluation(rng)])
            await assert_table_agrees_with_the_evaluations(conn)

            from alembic import command

            from app.db.admin import alembic_config_for

            command.downgrade(alembic_config_for(url), BEFORE)
            assert await conn.fetchval("SELECT to_regclass('cleaner_stats')") is None
            await evaluate(conn, owner=owner, cleaner=cleaners[0], evaluations=[random_evaluation(rng)])
            migrate(url, REVISION)
            await assert_table_agrees_with_the_evaluations(conn)
        finally:
            await conn.close()
