"""Forms for accounts and per-conversation settings."""

from __future__ import annotations

from typing import Any

from django import forms
from django.conf import settings
from django.contrib.auth.forms import UserCreationForm
from django.contrib.auth.models import User

from inference import registry


class SignupForm(UserCreationForm[User]):
    class Meta(UserCreationForm.Meta):
        model = User
        fields = ("username", "email")
        help_texts = {"email": "Optional: lets you reset a forgotten password."}


class EmailForm(forms.Form):
    email = forms.EmailField(
        label="Email", required=False, help_text="Where a password reset link goes. Leave empty for none."
    )


class ConversationSettingsForm(forms.Form):
    model_name = forms.ChoiceField(label="Model")
    system_prompt = forms.CharField(
        label="System prompt", required=False, max_length=4000, widget=forms.Textarea(attrs={"rows": 3})
    )
    temperature = forms.FloatField(label="Temperature", min_value=0.0, max_value=2.0)
    top_p = forms.FloatField(
        label="Top-p",
        min_value=0.01,
        max_value=1.0,
        required=False,
        help_text="Picks only among the likeliest words that together make up this share of the odds "
        "(1 considers every word; 0.01 to 1).",
    )
    max_tokens = forms.IntegerField(label="Max reply tokens", min_value=1)
    frequency_penalty = forms.FloatField(
        label="Repetition penalty",
        min_value=-2.0,
        max_value=2.0,
        required=False,
        help_text="Lowers the odds of words the reply already used, so it does not go round in circles "
        "(0 turns it off; -2 to 2).",
    )

    @classmethod
    def for_conversation(cls, conversation: Any, data: Any = None) -> ConversationSettingsForm:
        """The form for ``conversation``'s settings (a stored chat or a new one), for its owner."""
        initial = {name: getattr(conversation, name) for name in cls.base_fields}
        return cls(data, initial=initial, user=conversation.owner)

    def __init__(self, *args: Any, user: User, **kwargs: Any) -> None:
        """``user`` picks among the models they may use."""
        super().__init__(*args, **kwargs)
        model_field = self.fields["model_name"]
        assert isinstance(model_field, forms.ChoiceField)
        model_field.choices = registry.model_choices(user=user)

    def clean_max_tokens(self) -> int:
        value = int(self.cleaned_data["max_tokens"])
        limit = settings.INFERENCE_MAX_TOKENS_LIMIT
        if value > limit:
            raise forms.ValidationError(f"Ensure this value is less than or equal to {limit}.")
        return value


class RenameForm(forms.Form):
    title = forms.CharField(max_length=200, strip=True)
