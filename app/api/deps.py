"""Dependencies named by role: app state, settings, a unit-of-work DB session, the caller."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import Depends, Header, Request
from sqlalchemy.ext.asyncio import AsyncSession

from app.api.auth import User
from app.config import Settings
from app.lifespan import AppState
from app.observability.log_context import bind


async def get_state(request: Request) -> AppState:
    """The state opened by the lifespan."""
    state: AppState = request.app.state.copilot
    return state


StateDep = Annotated[AppState, Depends(get_state)]


async def get_settings(state: StateDep) -> Settings:
    """The settings the app was built with."""
    return state.settings


SettingsDep = Annotated[Settings, Depends(get_settings)]


async def get_db(state: StateDep) -> AsyncIterator[AsyncSession]:
    """A unit of work: committed when the route returns, rolled back when it raises."""
    async with state.sessions() as db:
        try:
            yield db
            await db.commit()
        except BaseException:
            await db.rollback()
            raise


SessionDep = Annotated[AsyncSession, Depends(get_db, scope="function")]


async def current_user(
    state: StateDep,
    authorization: Annotated[str | None, Header(include_in_schema=False)] = None,
    x_api_key: Annotated[str | None, Header(include_in_schema=False)] = None,
) -> User:
    """The authenticated caller (401 otherwise); the request's log lines name them."""
    user = state.auth.authenticate(authorization, x_api_key)
    bind(user_id=user.id)
    return user


CurrentUser = Annotated[User, Depends(current_user)]


async def metrics_reader(
    state: StateDep,
    authorization: Annotated[str | None, Header(include_in_schema=False)] = None,
) -> None:
    """A scraper holding COPILOT_METRICS_TOKEN, when one is set (401 otherwise)."""
    state.auth.authorize_metrics(authorization)
