"""A person in a real browser: Swagger UI at /docs, register, Authorize, and read /me.

Runs Debian's Chromium headless through Playwright (never a downloaded browser). Skipped where
Chromium is not installed, unless PHRESH_REQUIRE_BROWSER is set (CI sets it and installs Chromium).
"""

import json
import os
import shutil
from collections.abc import Iterator
from urllib.parse import urlparse

import pytest

from app.core.config import BACKEND_DIR
from scripts.live_server import live_server
from tests.conftest import IN_IMAGE, TEST_DATABASE_URL

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
ARTIFACTS = BACKEND_DIR / "test-artifacts"

if CHROMIUM is None and not os.environ.get("PHRESH_REQUIRE_BROWSER"):
    if IN_IMAGE:
        reason = "drives the host's Chromium, which the image does not hold: it runs outside the container"
    else:
        reason = "Chromium is not installed (Debian: apt-get install chromium)"
    pytest.skip(reason, allow_module_level=True)


@pytest.fixture(scope="module")
def docs_server() -> Iterator[str]:
    with live_server(TEST_DATABASE_URL) as base_url:
        yield base_url


async def test_a_person_registers_signs_in_and_reads_their_account_in_swagger_ui(docs_server: str) -> None:
    from playwright.async_api import async_playwright

    assert CHROMIUM is not None, "PHRESH_REQUIRE_BROWSER is set but Chromium is not installed"
    left_the_machine: list[str] = []
    username, password = "browser_user", "clicked-by-chromium"

    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path=CHROMIUM,
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
            ],
        )
        try:
            page = await browser.new_page(viewport={"width": 1280, "height": 2000})

            async def only_this_machine(route, request):  # type: ignore[no-untyped-def]
                if urlparse(request.url).hostname != "127.0.0.1":
                    left_the_machine.append(request.url)
                    await route.abort()
                else:
                    await route.continue_()

            await page.route("**/*", only_this_machine)
            await page.goto(f"{docs_server}/docs")
            await page.wait_for_selector(".opblock", timeout=30_000)

            # Register through "Try it out" (on by default here) on POST /api/users/.
            register = page.locator("#operations-users-users_register_new_user")
            await register.locator(".opblock-summary").click()
            body = {"new_user": {"email": "browser@example.com", "username": username, "password": password}}
            await register.locator("textarea.body-param__text").fill(json.dumps(body))
            await register.locator("button.execute").click()
            status = register.locator(".live-responses-table tr.response .response-col_status").first
            await status.wait_for(timeout=30_000)
            assert (await status.inner_text()).strip() == "201"

            # Sign in with the Authorize button: the OAuth2 password flow of the login route.
            await page.locator(".auth-wrapper button.authorize").click()
            await page.locator("#oauth_username").fill(username)
            await page.locator("#oauth_password").fill(password)
            await page.locator(".auth-btn-wrapper button.authorize").click()
            await page.locator(".auth-btn-wrapper button.btn-done").wait_for(timeout=30_000)
            await page.locator(".auth-btn-wrapper button.btn-done").click()

            # GET /api/users/me/ with the token Swagger UI now holds.
            me = page.locator("#operations-users-users_get_current_user")
            await me.locator(".opblock-summary").click()
            await me.locator("button.execute").click()
            me_status = me.locator(".live-responses-table tr.response .response-col_status").first
            await me_status.wait_for(timeout=30_000)
            await me.locator(".live-responses-table tr.response .response-col_description pre").first.wait_for()
            ARTIFACTS.mkdir(exist_ok=True)
            await page.screenshot(path=str(ARTIFACTS / "swagger-ui-me.png"), full_page=True)

            assert (await me_status.inner_text()).strip() == "200"
            response_body = await me.locator(
                ".live-responses-table tr.response .response-col_description pre"
            ).first.inner_text()
            assert json.loads(response_body)["username"] == username
        finally:
            await browser.close()

    assert left_the_machine == [], f"requests left 127.0.0.1: {left_the_machine}"
