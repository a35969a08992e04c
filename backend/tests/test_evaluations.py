"""Evaluations (Part 12): the owner rates the cleaner whose offer they accepted, once; anyone
logged in reads them and the cleaner's stats, which are right to the last digit."""

import asyncio
from collections.abc import Callable
from statistics import mean

import asyncpg
import pytest
from databases import Database
from fastapi import FastAPI, status
from httpx import AsyncClient

from app.models.cleaning import CleaningCreate, CleaningInDB
from app.models.evaluation import EvaluationAggregate, EvaluationCreate
from app.models.user import UserPublic
from tests.conftest import AnyUser, create_cleaning_with_evaluated_offer_helper, create_user

Clients = Callable[[AnyUser], AsyncClient]

NOT_ACCEPTED = {"detail": "Users are unable to leave multiple evaluations jobs they did not accept."}


def evaluate_path(app: FastAPI, cleaning: CleaningInDB | int, cleaner: AnyUser | str) -> str:
    cleaning_id = cleaning if isinstance(cleaning, int) else cleaning.id
    username = cleaner if isinstance(cleaner, str) else cleaner.username
    return app.url_path_for("evaluations:create-evaluation-for-cleaner", cleaning_id=cleaning_id, username=username)


def stats_path(app: FastAPI, cleaner: AnyUser | str) -> str:
    username = cleaner if isinstance(cleaner, str) else cleaner.username
    return app.url_path_for("evaluations:get-stats-for-cleaner", username=username)


class TestLeavingAnEvaluation:
    async def test_the_owner_evaluates_the_accepted_cleaner_and_the_offer_is_completed(
        self,
        app: FastAPI,
        client_for: Clients,
        test_user2: UserPublic,
        test_user3: UserPublic,
        test_cleaning_with_accepted_offer: CleaningInDB,
    ) -> None:
        owner = client_for(test_user2)
        body = {"no_show": False, "headline": "Spotless", "comment": "Would hire again.\nTwice.", "overall_rating": 5}
        res = await owner.post(
            evaluate_path(app, test_cleaning_with_accepted_offer, test_user3),
            json={"evaluation_create": {**body, "professionalism": 4}},
        )
        assert res.status_code == status.HTTP_201_CREATED
        evaluation = res.json()
        assert {key: evaluation[key] for key in body} == body
        assert (evaluation["cleaner_id"], evaluation["cleaning_id"]) == (
            test_user3.id,
            test_cleaning_with_accepted_offer.id,
        )
        assert (evaluation["professionalism"], evaluation["completeness"]) == (4, None)
        offer = await owner.get(
            app.url_path_for(
                "offers:get-offer-from-user", cleaning_id=test_cleaning_with_accepted_offer.id, username="bradpitt"
            )
        )
        assert offer.json()["status"] == "completed"
        # anyone logged in reads it
        res = await client_for(test_user3).get(
            app.url_path_for(
                "evaluations:get-evaluation-for-cleaner",
                cleaning_id=test_cleaning_with_accepted_offer.id,
                username=test_user3.username,
            )
        )
        assert (res.status_code, res.json()["headline"]) == (200, "Spotless")

    async def test_only_the_owner_evaluates(
        self,
        app: FastAPI,
        client_for: Clients,
        test_user3: UserPublic,
        test_user4: UserPublic,
        test_cleaning_with_accepted_offer: CleaningInDB,
    ) -> None:
        path = evaluate_path(app, test_cleaning_with_accepted_offer, test_user3)
        for stranger in (client_for(test_user4), client_for(test_user3)):  # another cleaner; the cleaner
            # the permission is settled before the body: even an invalid body gets the 403
            for body in ({"overall_rating": 2}, {"overall_rating": 9}):
                res = await stranger.post(path, json={"evaluation_create": body})
                assert res.status_code == status.HTTP_403_FORBIDDEN
                assert res.json() == {
                    "detail": "Users are unable to leave evaluations for cleaning jobs they do not own."
                }

    async def test_only_the_accepted_cleaner_is_evaluated_and_only_once(
        self,
        app: FastAPI,
        client_for: Clients,
        test_user: UserPublic,
        test_user2: UserPublic,
        test_user3: UserPublic,
        test_user4: UserPublic,
        test_cleaning_with_accepted_offer: CleaningInDB,
    ) -> None:
        owner = client_for(test_user2)
        cleaning = test_cleaning_with_accepted_offer
        res = await owner.post(
            evaluate_path(app, cleaning, test_user4), json={"evaluation_create": {"overall_rating": 1}}
        )
        assert (res.status_code, res.json()) == (400, NOT_ACCEPTED)  # rejected offer
        res = await owner.post(
            evaluate_path(app, cleaning, test_user), json={"evaluation_create": {"overall_rating": 1}}
        )
        assert (res.status_code, res.json()) == (404, {"detail": "Offer not found."})  # made no offer
        res = await owner.post(evaluate_path(app, cleaning, "nobody_here"), json={"evaluation_create": {}})
        assert (res.status_code, res.json()) == (404, {"detail": "No user found with that username."})
        first = await owner.post(
            evaluate_path(app, cleaning, test_user3), json={"evaluation_create": {"overall_rating": 3}}
        )
        assert first.status_code == status.HTTP_201_CREATED
        again = await owner.post(
            evaluate_path(app, cleaning, test_user3), json={"evaluation_create": {"overall_rating": 1}}
        )
        assert (again.status_code, again.json()) == (400, NOT_ACCEPTED)

    async def test_two_evaluations_sent_at_once_make_one(
        self,
        app: FastAPI,
        client_for: Clients,
        db: Database,
        test_user2: UserPublic,
        test_user3: UserPublic,
        test_cleaning_with_accepted_offer: CleaningInDB,
    ) -> None:
        path = evaluate_path(app, test_cleaning_with_accepted_offer, test_user3)
        tabs = [client_for(test_user2) for _ in range(4)]
        responses = await asyncio.gather(
            *(tab.post(path, json={"evaluation_create": {"overall_rating": i}}) for i, tab in enumerate(tabs, 1))
        )
        assert sorted(res.status_code for res in responses) == [201, 400, 400, 400]
        assert await db.fetch_val("SELECT count(*) FROM cleaning_to_cleaner_evaluations") == 1

    @pytest.mark.parametrize(
        "body",
        (
            {},
            {"overall_rating": None},
            {"overall_rating": 6},
            {"overall_rating": -1},
            {"overall_rating": 2.5},
            {"overall_rating": 3, "efficiency": 7},
            {"overall_rating": 3, "headline": "x" * 201},
            {"overall_rating": 3, "comment": "nul \x00"},
        ),
    )
    async def test_invalid_evaluations_are_422(
        self,
        app: FastAPI,
        client_for: Clients,
        db: Database,
        test_user2: UserPublic,
        test_user3: UserPublic,
        test_cleaning_with_accepted_offer: CleaningInDB,
        body: dict[str, object],
    ) -> None:
        res = await client_for(test_user2).post(
            evaluate_path(app, test_cleaning_with_accepted_offer, test_user3), json={"evaluation_create": body}
        )
        assert res.status_code == status.HTTP_422_UNPROCESSABLE_CONTENT
        assert await db.fetch_val("SELECT count(*) FROM cleaning_to_cleaner_evaluations") == 0

    async def test_the_database_refuses_ratings_out_of_range_and_evaluations_without_an_offer(
        self,
        db: Database,
        test_user: UserPublic,
        test_user3: UserPublic,
        test_cleaning_with_accepted_offer: CleaningInDB,
    ) -> None:
        insert = (
            "INSERT INTO cleaning_to_cleaner_evaluations (cleaning_id, cleaner_id, overall_rating, efficiency)"
            " VALUES (:c, :u, :overall, :efficiency)"
        )
        cleaning_id = test_cleaning_with_accepted_offer.id
        with pytest.raises(asyncpg.CheckViolationError):
            await db.execute(insert, values={"c": cleaning_id, "u": test_user3.id, "overall": 6, "efficiency": 1})
        with pytest.raises(asyncpg.CheckViolationError):
            await db.execute(insert, values={"c": cleaning_id, "u": test_user3.id, "overall": 5, "efficiency": -1})
        with pytest.raises(asyncpg.ForeignKeyViolationError):  # test_user made no offer
            await db.execute(insert, values={"c": cleaning_id, "u": test_user.id, "overall": 5, "efficiency": 1})

    async def test_an_evaluated_cleaning_cannot_be_deleted(
        self,
        app: FastAPI,
        client_for: Clients,
        db: Database,
        test_user2: UserPublic,
        test_list_of_cleanings_with_evaluated_offer: list[CleaningInDB],
    ) -> None:
        cleaning = test_list_of_cleanings_with_evaluated_offer[0]
        res = await client_for(test_user2).delete(
            app.url_path_for("cleanings:delete-cleaning-by-id", cleaning_id=cleaning.id)
        )
        assert res.status_code == status.HTTP_400_BAD_REQUEST
        assert await db.fetch_val("SELECT count(*) FROM cleaning_to_cleaner_evaluations") == 5

    async def test_a_new_evaluation_is_recorded_in_the_audit_trail(
        self, app: FastAPI, client_for: Clients, db: Database, test_user2: UserPublic, test_user3: UserPublic,
        test_cleaning_with_accepted_offer: CleaningInDB,
    ) -> None:  # fmt: skip
        path = evaluate_path(app, test_cleaning_with_accepted_offer, test_user3)
        await client_for(test_user2).post(path, json={"evaluation_create": {"overall_rating": 4}})
        row = await db.fetch_one("SELECT user_id, detail FROM security_events WHERE kind = 'evaluation_created'")
        assert row is not None
        assert (row["user_id"], row["detail"]) == (
            test_user2.id,
            f"cleaning {test_cleaning_with_accepted_offer.id}, cleaner {test_user3.id}",
        )


class TestReadingEvaluations:
    async def test_anyone_logged_in_lists_a_cleaners_evaluations(
        self,
        app: FastAPI,
        client_for: Clients,
        client: AsyncClient,
        test_user3: UserPublic,
        test_user4: UserPublic,
        test_list_of_cleanings_with_evaluated_offer: list[CleaningInDB],
    ) -> None:
        path = app.url_path_for("evaluations:list-evaluations-for-cleaner", username=test_user3.username)
        res = await client_for(test_user4).get(path)
        assert res.status_code == status.HTTP_200_OK
        assert [e["cleaning_id"] for e in res.json()] == [c.id for c in test_list_of_cleanings_with_evaluated_offer]
        assert {e["cleaner_id"] for e in res.json()} == {test_user3.id}
        assert (await client.get(path)).status_code == status.HTTP_401_UNAUTHORIZED

    async def test_a_cleaning_without_an_evaluation_is_404(
        self, app: FastAPI, client_for: Clients, test_user3: UserPublic, test_cleaning_with_accepted_offer: CleaningInDB
    ) -> None:
        res = await client_for(test_user3).get(
            app.url_path_for(
                "evaluations:get-evaluation-for-cleaner",
                cleaning_id=test_cleaning_with_accepted_offer.id,
                username=test_user3.username,
            )
        )
        assert (res.status_code, res.json()) == (404, {"detail": "No evaluation found for that cleaning."})


class TestStats:
    async def test_a_cleaner_with_no_evaluations_gets_an_empty_summary(
        self, app: FastAPI, authorized_client: AsyncClient, test_user3: UserPublic
    ) -> None:
        res = await authorized_client.get(stats_path(app, test_user3))
        assert res.status_code == status.HTTP_200_OK
        stats = EvaluationAggregate(**res.json())
        assert stats.total_evaluations == stats.total_no_show == stats.five_stars == 0
        assert stats.avg_overall_rating is None and stats.max_overall_rating is None

    async def test_averages_are_right_to_the_last_digit(
        self,
        app: FastAPI,
        authorized_client: AsyncClient,
        db: Database,
        test_user2: UserPublic,
        test_user3: UserPublic,
    ) -> None:
        # Eleven evaluations whose professionalism sums to 30: PostgreSQL's numeric AVG gives
        # 2.7272727272727273, one digit off the double nearest 30/11 (what Python's mean gives).
        professionalism = [5, 5, 4, 3, 3, 2, 2, 2, 2, 1, 1]
        overall = [5, 4, 4, 3, 3, 3, 2, 2, 1, 0, 0]
        completeness = [None, 1, 2, 3, 4, 5, None, 0, 0, 1, 5]
        assert sum(professionalism) == 30
        for i, (p, o, c) in enumerate(zip(professionalism, overall, completeness, strict=True)):
            await create_cleaning_with_evaluated_offer_helper(
                db,
                test_user2,
                test_user3,
                CleaningCreate(name=f"job {i}", price=10),
                EvaluationCreate(professionalism=p, overall_rating=o, completeness=c, no_show=i == 10),
            )
        res = await authorized_client.get(stats_path(app, test_user3))
        stats = EvaluationAggregate(**res.json())
        assert stats.avg_professionalism == mean(professionalism) == 30 / 11
        assert stats.avg_overall_rating == mean(overall)
        assert stats.avg_completeness == mean(c for c in completeness if c is not None)
        assert stats.avg_efficiency is None  # never rated
        assert (stats.min_overall_rating, stats.max_overall_rating) == (0, 5)
        stars = (stats.one_stars, stats.two_stars, stats.three_stars, stats.four_stars, stats.five_stars)
        assert stars == (1, 2, 3, 2, 1)  # the two zeros count in no bucket
        assert (stats.total_evaluations, stats.total_no_show) == (11, 1)

    async def test_the_stats_are_one_query_however_many_evaluations(
        self,
        app: FastAPI,
        authorized_client: AsyncClient,
        test_user3: UserPublic,
        test_list_of_cleanings_with_evaluated_offer: list[CleaningInDB],
        count_queries: list[str],
    ) -> None:
        res = await authorized_client.get(stats_path(app, test_user3))
        assert res.json()["total_evaluations"] == 5
        aggregate_queries = [query for query in count_queries if "cleaning_to_cleaner_evaluations" in query]
        assert len(aggregate_queries) == 1
        assert len(count_queries) == 3  # the caller, the cleaner, the stats

    async def test_an_unknown_cleaner_is_404(self, app: FastAPI, authorized_client: AsyncClient, db: Database) -> None:
        await create_user(db, email="x@example.com", username="someone", password="a-password")
        res = await authorized_client.get(stats_path(app, "nobody_here"))
        assert (res.status_code, res.json()) == (404, {"detail": "No user found with that username."})

    async def test_the_stats_are_read_only(self, app: FastAPI, authorized_client: AsyncClient) -> None:
        # "stats" is not a cleaning id: POST there is a method the stats do not allow, not a bad id
        res = await authorized_client.post(stats_path(app, "bradpitt"), json={"evaluation_create": {}})
        assert res.status_code == status.HTTP_405_METHOD_NOT_ALLOWED
        assert res.headers["Allow"] == "GET"
