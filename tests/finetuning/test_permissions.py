"""Only people allowed to fine-tune see the fine-tuning admin."""

from __future__ import annotations

import pytest
from django.test import Client
from django.urls import reverse

from tests.helpers import client_for

pytestmark = pytest.mark.django_db

PAGES = [
    ("admin:finetuning_finetuningjob_changelist", []),
    ("admin:finetuning_upload", []),
    ("admin:finetuning_finetunedmodel_changelist", []),
    ("admin:finetuning_trainingfile_changelist", []),
]


@pytest.mark.parametrize("who", ["admin_user", "finetuner"])
def test_superusers_and_fine_tuners_see_the_fine_tuning_admin(request, who) -> None:
    client = client_for(request.getfixturevalue(who))
    for name, args in PAGES:
        assert client.get(reverse(name, args=args)).status_code == 200, name
    index = client.get(reverse("admin:index")).content.decode()
    assert "Fine-tuning jobs" in index and "Fine-tuned models" in index


def test_staff_without_the_permission_get_403_and_do_not_see_it(plain_staff) -> None:
    client = client_for(plain_staff)
    for name, args in PAGES:
        assert client.get(reverse(name, args=args)).status_code == 403, name
    assert "Fine-tuning jobs" not in client.get(reverse("admin:index")).content.decode()


def test_a_signed_in_user_who_is_not_staff_is_sent_to_the_login(alice) -> None:
    response = client_for(alice).get(reverse("admin:finetuning_upload"))
    assert response.status_code == 302 and response["Location"].startswith(reverse("admin:login"))
    assert Client().get(reverse("admin:finetuning_finetuningjob_changelist")).status_code == 302
