"""Writes for people signing up on the dashboard: a user with a password and their first organization."""

from __future__ import annotations

from typing import TYPE_CHECKING

from django.contrib.auth import get_user_model
from django.db import IntegrityError, models, transaction
from django.utils.text import slugify

if TYPE_CHECKING:
    from django.contrib.auth.models import User

from organizations.errors import AccountExists, OrganizationSlugTaken
from organizations.models import Organization, random_token
from organizations.services.audit import Actor
from organizations.services.organizations import org_create

ORGANIZATION_SLUG_MAX = 40


def user_exists_with_email(*, email: str) -> bool:
    """Whether a user has this email or this email as username (case-insensitive)."""
    user_model = get_user_model()
    matches = models.Q(email__iexact=email) | models.Q(username__iexact=email)
    return user_model.objects.filter(matches).exists()


def organization_slug_from_name(name: str) -> str:
    """A free slug made from an organization's name (`acme-labs`, or `acme-labs-x3k9` when taken)."""
    base = slugify(name)[:ORGANIZATION_SLUG_MAX].strip("-") or "org"
    slug = base
    while Organization.objects.filter(slug=slug).exists():
        slug = f"{base}-{random_token(4)}"
    return slug


@transaction.atomic
def user_create(*, email: str, password: str) -> User:
    """A user whose username is their email, with a (validated by the caller) password."""
    user_model = get_user_model()
    email = user_model.objects.normalize_email(email.strip())
    if user_exists_with_email(email=email):
        raise AccountExists()
    user = user_model(username=email, email=email)
    user.set_password(password)
    try:
        with transaction.atomic():
            user.save()
    except IntegrityError as exc:  # a concurrent sign-up with the same email
        raise AccountExists() from exc
    return user  # type: ignore[return-value]


@transaction.atomic
def account_signup(*, email: str, password: str, organization_name: str) -> tuple[User, Organization]:
    """Create a user and an organization they own (its slug made from the name)."""
    user = user_create(email=email, password=password)
    name = organization_name.strip()
    for _ in range(3):
        try:
            organization = org_create(
                slug=organization_slug_from_name(name), name=name, owner=user, actor=Actor.for_user(user)
            )
            break
        except OrganizationSlugTaken:  # a concurrent create took the slug between check and insert
            continue
    else:
        raise OrganizationSlugTaken("Could not find a free slug for this organization; try another name.")
    return user, organization
