import getpass

from django.contrib.auth import get_user_model, password_validation
from django.contrib.auth.models import Group
from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError

from kickouts.roles import ROLE_OPTIONS


class Command(BaseCommand):
    help = "Create (or update) a dashboard user with a role: ap-staff, supervisor or none."

    def add_arguments(self, parser):
        parser.add_argument("username")
        parser.add_argument("--role", choices=ROLE_OPTIONS, required=True)
        parser.add_argument("--name", default="", help="Full name, e.g. 'Maria Okafor'.")
        parser.add_argument("--email", default="")
        parser.add_argument(
            "--password",
            help="Give the password here (scripts only); without it you are prompted.",
        )

    def handle(self, *args, username, role, name, email, password, **options):
        User = get_user_model()
        user, created = User.objects.get_or_create(username=username)
        if name:
            user.first_name, _, user.last_name = name.partition(" ")
        if email:
            user.email = email
        if password is None and (created or not user.has_usable_password()):
            password = getpass.getpass(f"Password for {username}: ")
        if password is not None:
            try:
                password_validation.validate_password(password, user)
            except ValidationError as exc:
                raise CommandError(" ".join(exc.messages)) from None
            user.set_password(password)
        user.save()
        group = ROLE_OPTIONS[role]
        user.groups.set([Group.objects.get(name=group)] if group else [])
        verb = "Created" if created else "Updated"
        self.stdout.write(f"{verb} {username} with role {group or 'none'}.")
