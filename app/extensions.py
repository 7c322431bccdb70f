"""Extensions created unbound here and bound to the app in create_app()."""

from typing import TYPE_CHECKING

from flask_migrate import Migrate
from flask_sqlalchemy import SQLAlchemy
from sqlalchemy.orm import DeclarativeBase


class Base(DeclarativeBase):
    """Declarative base shared by every model."""


db = SQLAlchemy(model_class=Base)
migrate = Migrate()

# Models subclass db.Model, which Flask-SQLAlchemy builds at run time from Base;
# type checkers see Base itself, so the models' columns keep their types.
if TYPE_CHECKING:
    Model = Base
else:
    Model = db.Model
