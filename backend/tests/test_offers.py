"""Offers (Part 11, with Part 20's embedded users): who may make, see, accept, cancel and rescind
them, what the database refuses whatever the code does, and the races of two requests at once."""

import asyncio
from collections.abc import Callable

import asyncpg
import pytest
from databases import Database
from fastapi import FastAPI, status
from httpx import AsyncClient, Response

from app.db.repositories.offers import OffersRepository
from app.models.cleaning import CleaningInDB
from app.models.offer import OfferPublic
from app.models.user import UserInDB, UserPublic
from tests.conftest import AnyUser, create_cleaning_with_offers, create_user

Clients = Callable[[AnyUser], AsyncClient]

ALREADY_ACCEPTED = {"detail": "That cleaning job already has an accepted offer."}
NOT_PENDING = {"detail": "Can only accept offers that are currently pending."}
OFFER_NOT_FOUND = {"detail": "Offer not found."}


def offers_path(app: FastAPI, cleaning: CleaningInDB | int) -> str:
    cleaning_id = cleaning if isinstance(cleaning, int) else cleaning.id
    return app.url_path_for("offers:list-offers-for-cleaning", cleaning_id=cleaning_id)


def offer_path(app: FastAPI, cleaning: CleaningInDB, user: AnyUser | str) -> str:
    username = user if isinstance(user, str) else user.username
    return app.url_path_for("offers:get-offer-from-user", cleaning_id=cleaning.id, username=username)


async def statuses(db: Database, cleaning: CleaningInDB) -> dict[int, str]:
    offers = await OffersRepository(db).list_offers_for_cleaning(cleaning=cleaning, populate=False)
    return {offer.user_id: offer.status for offer in offers}


class TestMakingOffers:
    async def test_a_user_offers_to_do_someone_elses_cleaning(
        self, app: FastAPI, client_for: Clients, test_cleaning: CleaningInDB, test_user3: UserPublic
    ) -> None:
        res = await client_for(test_user3).post(offers_path(app, test_cleaning))
        assert res.status_code == status.HTTP_201_CREATED
        offer = OfferPublic(**res.json())
        assert (offer.user_id, offer.cleaning_id, offer.status) == (test_user3.id, test_cleaning.id, "pending")
        assert offer.created_at is not None and offer.user is None and offer.cleaning is None

    async def test_owners_cannot_offer_on_their_own_cleaning(
        self, app: FastAPI, authorized_client: AsyncClient, test_cleaning: CleaningInDB
    ) -> None:
        res = await authorized_client.post(offers_path(app, test_cleaning))
        assert res.status_code == status.HTTP_400_BAD_REQUEST
        assert res.json() == {"detail": "Users are unable to create offers for cleaning jobs they own."}

    async def test_one_offer_per_user_and_cleaning_even_when_sent_at_once(
        self, app: FastAPI, client_for: Clients, db: Database, test_cleaning: CleaningInDB, test_user3: UserPublic
    ) -> None:
        tabs = [client_for(test_user3) for _ in range(6)]
        responses = await asyncio.gather(*(tab.post(offers_path(app, test_cleaning)) for tab in tabs))
        assert sorted(res.status_code for res in responses) == [201] + [400] * 5
        duplicate = {"detail": "Users aren't allowed create more than one offer for a cleaning job."}
        assert all(res.json() == duplicate for res in responses if res.status_code == 400)
        assert await statuses(db, test_cleaning) == {test_user3.id: "pending"}

    @pytest.mark.parametrize("cleaning_id, status_code", ((5_000_000, 404), (0, 422), (-1, 422), ("abc", 422)))
    async def test_a_cleaning_that_does_not_exist(
        self, app: FastAPI, client_for: Clients, test_user3: UserPublic, cleaning_id: object, status_code: int
    ) -> None:
        res = await client_for(test_user3).post(f"/api/cleanings/{cleaning_id}/offers/")
        assert res.status_code == status_code

    async def test_anonymous_callers_get_401(self, app: FastAPI, client: AsyncClient) -> None:
        for method, path in (
            ("POST", "/api/cleanings/1/offers/"),
            ("GET", "/api/cleanings/1/offers/"),
            ("PUT", "/api/cleanings/1/offers/"),
            ("DELETE", "/api/cleanings/1/offers/"),
            ("GET", "/api/cleanings/-1/offers/bradpitt/"),
            ("PUT", "/api/cleanings/abc/offers/x/"),
        ):
            assert (await client.request(method, path)).status_code == status.HTTP_401_UNAUTHORIZED, (method, path)


class TestSeeingOffers:
    async def test_the_owner_lists_every_offer_with_its_user(
        self,
        app: FastAPI,
        client_for: Clients,
        test_user2: UserPublic,
        test_user_list: list[UserPublic],
        test_cleaning_with_offers: CleaningInDB,
    ) -> None:
        res = await client_for(test_user2).get(offers_path(app, test_cleaning_with_offers))
        assert res.status_code == status.HTTP_200_OK
        offers = res.json()
        assert [offer["user_id"] for offer in offers] == [user.id for user in test_user_list]  # oldest first
        for offer, user in zip(offers, test_user_list, strict=True):
            assert (offer["user"]["username"], offer["user"]["profile"]["user_id"]) == (user.username, user.id)
            assert not {"password", "salt"} & offer["user"].keys()

    async def test_listing_costs_the_same_queries_for_one_offer_or_many(
        self,
        app: FastAPI,
        client_for: Clients,
        db: Database,
        test_user2: UserPublic,
        test_user3: UserPublic,
        test_user_list: list[UserPublic],
        count_queries: list[str],
    ) -> None:
        owner = client_for(test_user2)
        few = await create_cleaning_with_offers(db, test_user2, [test_user3])
        crowd = [
            await create_user(db, email=f"cleaner{i}@example.com", username=f"cleaner{i}", password="clean-it")
            for i in range(12)
        ]
        many = await create_cleaning_with_offers(db, test_user2, [*test_user_list, *crowd])
        count_queries.clear()
        assert len((await owner.get(offers_path(app, few))).json()) == 1
        queries_for_one = len(count_queries)
        count_queries.clear()
        assert len((await owner.get(offers_path(app, many))).json()) == 16
        assert len(count_queries) == queries_for_one <= 4  # the user, the cleaning, the offers (+ one spare)

    async def test_only_the_owner_lists_them(
        self,
        app: FastAPI,
        authorized_client: AsyncClient,
        client_for: Clients,
        test_user3: UserPublic,
        test_cleaning_with_offers: CleaningInDB,
    ) -> None:
        for stranger in (authorized_client, client_for(test_user3)):  # someone else; an offerer
            res = await stranger.get(offers_path(app, test_cleaning_with_offers))
            assert res.status_code == status.HTTP_403_FORBIDDEN
            assert res.json() == {"detail": "Unable to access offers."}

    async def test_an_offer_is_seen_by_the_owner_and_its_user_only(
        self,
        app: FastAPI,
        authorized_client: AsyncClient,
        client_for: Clients,
        test_user2: UserPublic,
        test_user3: UserPublic,
        test_user4: UserPublic,
        test_cleaning_with_offers: CleaningInDB,
    ) -> None:
        path = offer_path(app, test_cleaning_with_offers, test_user3)
        for viewer in (client_for(test_user2), client_for(test_user3)):
            res = await viewer.get(path)
            assert res.status_code == status.HTTP_200_OK
            assert (res.json()["user_id"], res.json()["status"]) == (test_user3.id, "pending")
        for stranger in (authorized_client, client_for(test_user4)):
            res = await stranger.get(path)
            assert (res.status_code, res.json()) == (403, {"detail": "Unable to access offer."})

    async def test_unknown_users_and_missing_offers_are_404(
        self,
        app: FastAPI,
        client_for: Clients,
        test_user: UserPublic,
        test_user2: UserPublic,
        test_cleaning_with_offers: CleaningInDB,
    ) -> None:
        owner = client_for(test_user2)
        res = await owner.get(offer_path(app, test_cleaning_with_offers, "nobody_here"))
        assert (res.status_code, res.json()) == (404, {"detail": "No user found with that username."})
        res = await owner.get(offer_path(app, test_cleaning_with_offers, test_user))  # made no offer
        assert (res.status_code, res.json()) == (404, OFFER_NOT_FOUND)
        res = await owner.get(offer_path(app, test_cleaning_with_offers, "no"))  # no user can be called that
        assert res.status_code == status.HTTP_422_UNPROCESSABLE_CONTENT


class TestAcceptingOffers:
    async def test_accepting_one_rejects_every_other_pending_offer(
        self,
        app: FastAPI,
        client_for: Clients,
        db: Database,
        test_user2: UserPublic,
        test_user4: UserPublic,
        test_user_list: list[UserPublic],
        test_cleaning_with_offers: CleaningInDB,
    ) -> None:
        res = await client_for(test_user2).put(offer_path(app, test_cleaning_with_offers, test_user4))
        assert res.status_code == status.HTTP_200_OK
        assert (res.json()["user_id"], res.json()["status"]) == (test_user4.id, "accepted")
        expected = {user.id: "accepted" if user.id == test_user4.id else "rejected" for user in test_user_list}
        assert await statuses(db, test_cleaning_with_offers) == expected

    async def test_only_the_owner_accepts(
        self,
        app: FastAPI,
        authorized_client: AsyncClient,
        client_for: Clients,
        db: Database,
        test_user3: UserPublic,
        test_cleaning_with_offers: CleaningInDB,
    ) -> None:
        for stranger in (authorized_client, client_for(test_user3)):  # someone else; the offerer
            res = await stranger.put(offer_path(app, test_cleaning_with_offers, test_user3))
            assert (res.status_code, res.json()) == (
                403,
                {"detail": "Only the owner of the cleaning may accept offers."},
            )
        assert set((await statuses(db, test_cleaning_with_offers)).values()) == {"pending"}

    async def test_a_rejected_offer_cannot_be_accepted(
        self, app: FastAPI, client_for: Clients, test_user2: UserPublic, test_user4: UserPublic,
        test_cleaning_with_accepted_offer: CleaningInDB,
    ) -> None:  # fmt: skip
        res = await client_for(test_user2).put(offer_path(app, test_cleaning_with_accepted_offer, test_user4))
        assert (res.status_code, res.json()) == (400, NOT_PENDING)

    async def test_an_offer_made_after_the_acceptance_cannot_be_accepted_too(
        self,
        app: FastAPI,
        client_for: Clients,
        db: Database,
        test_user2: UserPublic,
        test_user3: UserPublic,
        test_cleaning_with_accepted_offer: CleaningInDB,
    ) -> None:
        latecomer = await create_user(db, email="late@example.com", username="latecomer", password="too-late")
        res = await client_for(latecomer).post(offers_path(app, test_cleaning_with_accepted_offer))
        assert res.status_code == status.HTTP_201_CREATED
        res = await client_for(test_user2).put(offer_path(app, test_cleaning_with_accepted_offer, latecomer))
        assert (res.status_code, res.json()) == (400, ALREADY_ACCEPTED)
        assert (await statuses(db, test_cleaning_with_accepted_offer))[test_user3.id] == "accepted"

    @pytest.mark.parametrize("attempt", range(5))
    async def test_two_tabs_accepting_two_offers_at_once_end_with_one_accepted(
        self,
        app: FastAPI,
        client_for: Clients,
        db: Database,
        test_user2: UserPublic,
        test_user_list: list[UserPublic],
        test_cleaning_with_offers: CleaningInDB,
        attempt: int,
    ) -> None:
        tabs = [client_for(test_user2) for _ in test_user_list]
        responses: list[Response] = await asyncio.gather(
            *(
                tab.put(offer_path(app, test_cleaning_with_offers, user))
                for tab, user in zip(tabs, test_user_list, strict=True)
            )
        )
        assert sorted(res.status_code for res in responses) == [200, 400, 400, 400]
        assert all(res.json() in (ALREADY_ACCEPTED, NOT_PENDING) for res in responses if res.status_code == 400)
        winner = next(res.json()["user_id"] for res in responses if res.status_code == 200)
        expected = {user.id: "accepted" if user.id == winner else "rejected" for user in test_user_list}
        assert await statuses(db, test_cleaning_with_offers) == expected

    async def test_the_database_itself_refuses_a_second_accepted_offer(
        self, db: Database, test_user4: UserPublic, test_cleaning_with_accepted_offer: CleaningInDB
    ) -> None:
        with pytest.raises(asyncpg.UniqueViolationError):
            await db.execute(
                "UPDATE user_offers_for_cleanings SET status = 'accepted' WHERE cleaning_id = :c AND user_id = :u",
                values={"c": test_cleaning_with_accepted_offer.id, "u": test_user4.id},
            )
        with pytest.raises(asyncpg.CheckViolationError):
            await db.execute(
                "UPDATE user_offers_for_cleanings SET status = 'maybe' WHERE cleaning_id = :c",
                values={"c": test_cleaning_with_accepted_offer.id},
            )
        with pytest.raises(asyncpg.UniqueViolationError):  # one offer per user and cleaning
            await db.execute(
                "INSERT INTO user_offers_for_cleanings (user_id, cleaning_id) VALUES (:u, :c)",
                values={"c": test_cleaning_with_accepted_offer.id, "u": test_user4.id},
            )


class TestCancellingAndRescinding:
    async def test_the_accepted_cleaner_cancels_and_the_others_are_pending_again(
        self,
        app: FastAPI,
        client_for: Clients,
        db: Database,
        test_user2: UserPublic,
        test_user3: UserPublic,
        test_user4: UserPublic,
        test_user_list: list[UserPublic],
        test_cleaning_with_accepted_offer: CleaningInDB,
    ) -> None:
        res = await client_for(test_user3).put(offers_path(app, test_cleaning_with_accepted_offer))
        assert (res.status_code, res.json()["status"]) == (200, "cancelled")
        expected = {user.id: "cancelled" if user.id == test_user3.id else "pending" for user in test_user_list}
        assert await statuses(db, test_cleaning_with_accepted_offer) == expected
        # and the owner can accept another one
        res = await client_for(test_user2).put(offer_path(app, test_cleaning_with_accepted_offer, test_user4))
        assert (res.status_code, res.json()["status"]) == (200, "accepted")

    async def test_only_an_accepted_offer_is_cancelled(
        self,
        app: FastAPI,
        client_for: Clients,
        test_user: UserPublic,
        test_user4: UserPublic,
        test_cleaning_with_accepted_offer: CleaningInDB,
    ) -> None:
        res = await client_for(test_user4).put(offers_path(app, test_cleaning_with_accepted_offer))  # rejected
        assert res.json() == {"detail": "Can only cancel offers that have been accepted."}
        res = await client_for(test_user).put(offers_path(app, test_cleaning_with_accepted_offer))  # none
        assert (res.status_code, res.json()) == (404, OFFER_NOT_FOUND)

    async def test_a_pending_offer_is_rescinded_and_gone(
        self, app: FastAPI, client_for: Clients, db: Database, test_user4: UserPublic,
        test_cleaning_with_offers: CleaningInDB,
    ) -> None:  # fmt: skip
        res = await client_for(test_user4).delete(offers_path(app, test_cleaning_with_offers))
        assert (res.status_code, res.json()) == (200, test_cleaning_with_offers.id)
        assert test_user4.id not in await statuses(db, test_cleaning_with_offers)
        assert len(await statuses(db, test_cleaning_with_offers)) == 3
        res = await client_for(test_user4).delete(offers_path(app, test_cleaning_with_offers))
        assert (res.status_code, res.json()) == (404, OFFER_NOT_FOUND)

    async def test_accepted_cancelled_and_rejected_offers_are_not_rescinded(
        self,
        app: FastAPI,
        client_for: Clients,
        db: Database,
        test_user3: UserPublic,
        test_user4: UserPublic,
        test_cleaning_with_accepted_offer: CleaningInDB,
    ) -> None:
        not_rescindable = {"detail": "Can only rescind currently pending offers."}
        path = offers_path(app, test_cleaning_with_accepted_offer)
        for user in (test_user3, test_user4):  # accepted, rejected
            assert (await client_for(user).delete(path)).json() == not_rescindable
        await client_for(test_user3).put(path)  # cancelled
        assert (await client_for(test_user3).delete(path)).json() == not_rescindable
        assert len(await statuses(db, test_cleaning_with_accepted_offer)) == 4

    @pytest.mark.parametrize("attempt", range(8))
    async def test_rescinding_while_the_owner_accepts_ends_one_way_or_the_other(
        self,
        app: FastAPI,
        client_for: Clients,
        db: Database,
        test_user2: UserPublic,
        test_user3: UserPublic,
        test_cleaning_with_offers: CleaningInDB,
        attempt: int,
    ) -> None:
        accept, rescind = await asyncio.gather(
            client_for(test_user2).put(offer_path(app, test_cleaning_with_offers, test_user3)),
            client_for(test_user3).delete(offers_path(app, test_cleaning_with_offers)),
        )
        final = (await statuses(db, test_cleaning_with_offers)).get(test_user3.id)
        if accept.status_code == 200:
            assert (rescind.status_code, final) == (400, "accepted")
        else:
            assert (accept.status_code, rescind.status_code, final) == (404, 200, None)


class TestDeletingACleaningWithOffers:
    async def test_pending_offers_go_with_the_cleaning(
        self, app: FastAPI, client_for: Clients, db: Database, test_user2: UserPublic,
        test_cleaning_with_offers: CleaningInDB,
    ) -> None:  # fmt: skip
        path = app.url_path_for("cleanings:delete-cleaning-by-id", cleaning_id=test_cleaning_with_offers.id)
        res = await client_for(test_user2).delete(path)
        assert (res.status_code, res.json()) == (200, test_cleaning_with_offers.id)
        assert await db.fetch_val("SELECT count(*) FROM user_offers_for_cleanings") == 0

    async def test_a_cleaning_with_an_accepted_offer_stays_until_the_cleaner_cancels(
        self,
        app: FastAPI,
        client_for: Clients,
        test_user2: UserPublic,
        test_user3: UserPublic,
        test_cleaning_with_accepted_offer: CleaningInDB,
    ) -> None:
        owner = client_for(test_user2)
        path = app.url_path_for("cleanings:delete-cleaning-by-id", cleaning_id=test_cleaning_with_accepted_offer.id)
        res = await owner.delete(path)
        assert res.status_code == status.HTTP_400_BAD_REQUEST
        assert res.json() == {"detail": "This cleaning job has an accepted offer and cannot be deleted."}
        await client_for(test_user3).put(offers_path(app, test_cleaning_with_accepted_offer))
        assert (await owner.delete(path)).status_code == status.HTTP_200_OK

    @pytest.mark.parametrize("attempt", range(3))
    async def test_deleting_while_accepting_never_leaves_an_accepted_offer_without_its_cleaning(
        self,
        app: FastAPI,
        client_for: Clients,
        db: Database,
        test_user2: UserPublic,
        test_user3: UserPublic,
        test_cleaning_with_offers: CleaningInDB,
        attempt: int,
    ) -> None:
        path = app.url_path_for("cleanings:delete-cleaning-by-id", cleaning_id=test_cleaning_with_offers.id)
        accept, delete = await asyncio.gather(
            client_for(test_user2).put(offer_path(app, test_cleaning_with_offers, test_user3)),
            client_for(test_user2).delete(path),
        )
        remaining = await db.fetch_val("SELECT count(*) FROM cleanings")
        if accept.status_code == 200:
            assert (delete.status_code, remaining) == (400, 1)
        else:
            assert (accept.status_code, delete.status_code, remaining) == (404, 200, 0)

    async def test_deleting_a_user_with_offers_never_fails(
        self, db: Database, test_user3: UserInDB, test_cleaning_with_accepted_offer: CleaningInDB
    ) -> None:
        await db.execute("DELETE FROM users WHERE id = :id", values={"id": test_user3.id})
        assert test_user3.id not in await statuses(db, test_cleaning_with_accepted_offer)


class TestTheAuditTrail:
    async def test_accepting_cancelling_and_rescinding_are_recorded(
        self,
        app: FastAPI,
        client_for: Clients,
        db: Database,
        test_user2: UserPublic,
        test_user3: UserPublic,
        test_user4: UserPublic,
        test_cleaning_with_offers: CleaningInDB,
    ) -> None:
        cleaning = test_cleaning_with_offers
        await client_for(test_user2).put(offer_path(app, cleaning, test_user3))
        await client_for(test_user3).put(offers_path(app, cleaning))
        await client_for(test_user4).delete(offers_path(app, cleaning))
        rows = await db.fetch_all("SELECT kind, user_id, detail, client_address FROM security_events ORDER BY id")
        assert [tuple(row._mapping.values()) for row in rows] == [
            ("offer_accepted", test_user2.id, f"cleaning {cleaning.id}, offer of user {test_user3.id}", "127.0.0.1"),
            ("offer_cancelled", test_user3.id, f"cleaning {cleaning.id}, offer of user {test_user3.id}", "127.0.0.1"),
            ("offer_rescinded", test_user4.id, f"cleaning {cleaning.id}, offer of user {test_user4.id}", "127.0.0.1"),
        ]


class TestTheTutorialsRepositoryCalls:
    async def test_an_offer_populates_with_its_user(
        self, db: Database, test_user3: UserPublic, test_cleaning_with_offers: CleaningInDB
    ) -> None:
        offers_repo = OffersRepository(db)
        offer = await offers_repo.get_offer_for_cleaning_from_user(cleaning=test_cleaning_with_offers, user=test_user3)
        assert offer is not None
        populated = await offers_repo.populate_offer(offer=offer)
        assert populated.user == test_user3 and populated.cleaning is None
        listed = await offers_repo.list_offers_for_cleaning(cleaning=test_cleaning_with_offers)
        assert populated in listed

    async def test_unpopulated_offers_page_the_same_way(
        self, db: Database, test_user_list: list[UserPublic], test_cleaning_with_offers: CleaningInDB
    ) -> None:
        offers_repo = OffersRepository(db)
        everything = await offers_repo.list_offers_for_cleaning(cleaning=test_cleaning_with_offers, populate=False)
        first = await offers_repo.list_offers_for_cleaning(cleaning=test_cleaning_with_offers, populate=False, limit=3)
        last = first[-1]
        rest = await offers_repo.list_offers_for_cleaning(
            cleaning=test_cleaning_with_offers,
            populate=False,
            after=(last.created_at, last.user_id),  # type: ignore[arg-type]
        )
        assert [o.user_id for o in first + rest] == [o.user_id for o in everything] == [u.id for u in test_user_list]
