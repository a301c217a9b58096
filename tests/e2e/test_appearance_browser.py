"""Dark mode in real Chromium: every page follows the system's colour scheme, the sidebar
toggle is remembered for the user, and text keeps WCAG AA contrast in both themes (the
chat, settings, API keys, and the admin's fine-tuning job page with its loss chart)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.e2e.ui import background_luminance, contrast_failures, manage_shell, new_user, synthetic_server

pytestmark = [pytest.mark.e2e]

REPLY = "Here is **a list**:\n\n- one\n- `two`\n\n| a | b |\n|---|---|\n| 1 | 2 |\n\n```python\nprint('hi')\n```\n\n> quoted"

MAKE_JOB = """
from django.contrib.auth.models import User
from finetuning.models import FineTuningJob, FineTuningMetric, TrainingFile
admin = User.objects.create_superuser("jobadmin", password="a long pass phrase 42")
data = TrainingFile.objects.create(filename="facts.jsonl", format="prompt_completion", status="processed", created_by=admin)
job = FineTuningJob.objects.create(base_model="bundled", training_file=data, status="succeeded", step=20, total_steps=20,
    epoch=2, hyperparameters={"n_epochs": 2, "batch_size": 4, "learning_rate_multiplier": 1}, created_by=admin,
    stop_reason="learnt 8/8 training examples", kept_epoch=2, fine_tuned_model="ft:bundled:facts")
for step in range(1, 21):
    FineTuningMetric.objects.create(job=job, step=step, epoch=1 + step // 11, train_loss=3.0 / step, learning_rate=1e-4,
        epoch_train_loss=(1.0 if step in (10, 20) else None), val_loss=(1.2 if step in (10, 20) else None),
        val_token_accuracy=(0.8 if step in (10, 20) else None))
job.events.create(level="info", message="Training finished")
job.events.create(level="warn", message="One example was too long")
from conversations import services
chat = services.conversation_create(owner=admin)
turn = services.turn_start(conversation=chat, text="Show me a table")
services.assistant_message_finish(message_pk=turn.assistant_message.pk, content="| a | b |\\n|---|---|\\n| 1 | 2 |\\n\\n`code`",
    seq=1, finish_reason="length", prompt_tokens=5, completion_tokens=9)
print(chat.pk)
print(job.public_id)
"""


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, dict[str, str]]]:
    yield from synthetic_server(tmp_path_factory.mktemp("appearance"), text=REPLY, tokens_per_second=200)


def scheme_page(browser, scheme: str):
    context = browser.new_context(viewport={"width": 1280, "height": 860}, color_scheme=scheme)
    page = context.new_page()
    page.set_default_timeout(30_000)
    return page


def chat_with_a_reply(page, url: str) -> None:
    page.get_by_role("button", name="Start a new chat").click()
    page.locator("body:not(.is-offline) .chat").wait_for()
    page.get_by_label("Message").fill("Show me some Markdown")
    page.keyboard.press("Enter")
    page.locator("article.msg-assistant[data-status='complete'] table").wait_for()


@pytest.mark.parametrize("scheme", ["light", "dark"])
def test_every_page_follows_the_system_and_stays_readable(server, browser, scheme) -> None:
    url, _ = server
    page = scheme_page(browser, scheme)
    new_user(page, url)
    dark = scheme == "dark"
    chat_with_a_reply(page, url)
    assert (background_luminance(page, ".main") < 0.05) == dark, "the chat follows the system's scheme"
    assert (background_luminance(page, ".msg-user .msg-text") < 0.1) == dark
    assert contrast_failures(page) == []
    page.locator("summary", has_text="Settings").click()
    assert contrast_failures(page, "#settings-form") == []
    page.goto(f"{url}/settings/")
    assert (background_luminance(page, ".main") < 0.05) == dark
    assert contrast_failures(page) == []
    page.goto(f"{url}/api/keys/")
    page.get_by_label("Name").fill("laptop")
    page.get_by_role("button", name="Create key").click()
    page.locator(".key-created").wait_for()
    assert (background_luminance(page, ".key-created") < 0.1) == dark
    assert contrast_failures(page) == []
    for path in ("/api/", "/search/?q=Markdown"):
        page.goto(f"{url}{path}")
        assert (background_luminance(page, ".main") < 0.05) == dark, path
        assert contrast_failures(page) == [], path
    page.goto(f"{url}/accounts/login/")  # signed in: the login page sends them home; log out first
    page.context.clear_cookies()
    page.goto(f"{url}/accounts/login/")
    assert (background_luminance(page, ".auth-card") < 0.05) == dark
    assert contrast_failures(page) == []
    page.context.close()


def test_the_toggle_switches_at_once_and_is_remembered_for_the_user(server, browser) -> None:
    url, _ = server
    page = scheme_page(browser, "light")
    name = new_user(page, url)
    assert background_luminance(page, ".main") > 0.9
    toggle = page.get_by_role("button", name="Dark mode")
    assert toggle.get_attribute("aria-pressed") == "false"
    with page.expect_response(lambda response: "/settings/theme/" in response.url) as answer:
        toggle.click()
    assert answer.value.status == 204
    assert background_luminance(page, ".main") < 0.05
    assert toggle.get_attribute("aria-pressed") == "true"
    page.reload()
    assert page.locator("html").get_attribute("data-theme") == "dark"
    assert background_luminance(page, ".main") < 0.05

    other = scheme_page(browser, "light")  # another browser: log in, the theme comes along
    other.goto(f"{url}/accounts/login/")
    other.get_by_label("Username").fill(name)
    other.get_by_label("Password").fill("a long pass phrase 42")
    other.get_by_role("button", name="Log in").click()
    other.locator(".app").wait_for()
    assert background_luminance(other, ".main") < 0.05
    other.goto(f"{url}/settings/")
    assert other.get_by_label("Dark", exact=True).is_checked()
    other.get_by_label("Follow my system").check()
    other.get_by_role("button", name="Save theme").click()
    other.get_by_text("Saved.").wait_for()
    assert background_luminance(other, ".main") > 0.9, "following a light system again"
    other.context.close()
    page.context.close()


@pytest.mark.parametrize("scheme", ["light", "dark"])
def test_the_admin_job_page_and_its_loss_chart_are_readable(server, browser, scheme) -> None:
    url, env = server
    chat_pk, job_id = manage_shell(env, MAKE_JOB.replace("jobadmin", f"jobadmin{scheme}")).splitlines()[-2:]
    page = scheme_page(browser, scheme)
    page.goto(f"{url}/admin/login/")
    page.get_by_label("Username").fill(f"jobadmin{scheme}")
    page.get_by_label("Password").fill("a long pass phrase 42")
    page.get_by_role("button", name="Log in").click()
    page.goto(f"{url}/admin/finetuning/finetuningjob/{job_id}/change/")
    page.locator("svg.ft-chart polyline").wait_for()
    dark = scheme == "dark"
    assert (background_luminance(page, "svg.ft-chart") < 0.05) == dark, "the chart's box follows the admin's theme"
    assert contrast_failures(page, ".ft-page") == []
    axis_labels = page.locator("svg.ft-chart text")
    assert axis_labels.count() >= 3
    page.goto(f"{url}/admin/conversations/conversation/{chat_pk}/change/")  # a transcript in review
    page.locator(".transcript table").wait_for()
    assert (background_luminance(page, ".t-user") < 0.2) == dark
    assert contrast_failures(page, ".transcript") == []
    page.context.close()


def test_the_admin_starts_from_the_theme_chosen_in_parley(server, browser) -> None:
    url, env = server
    _, job_id = manage_shell(env, MAKE_JOB.replace("jobadmin", "jobadmintheme")).splitlines()[-2:]
    manage_shell(
        env,
        "from django.contrib.auth.models import User\nfrom conversations import services\n"
        "services.user_theme_set(user=User.objects.get(username='jobadmintheme'), theme='dark')",
    )
    page = scheme_page(browser, "light")
    page.goto(f"{url}/admin/login/")
    page.get_by_label("Username").fill("jobadmintheme")
    page.get_by_label("Password").fill("a long pass phrase 42")
    page.get_by_role("button", name="Log in").click()
    page.goto(f"{url}/admin/finetuning/finetuningjob/{job_id}/change/")
    page.locator("svg.ft-chart polyline").wait_for()
    assert background_luminance(page, "svg.ft-chart") < 0.05, "dark, as chosen in Parley, on a light system"
    page.locator("button.theme-toggle").first.click()  # the admin's own switch: dark -> light here
    page.wait_for_function("() => document.documentElement.dataset.theme === 'light'")
    page.reload()
    page.locator("svg.ft-chart polyline").wait_for()
    assert background_luminance(page, "svg.ft-chart") > 0.9, "once used, the admin's switch decides"
    page.context.close()
