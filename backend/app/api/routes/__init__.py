from fastapi import APIRouter

from app.api.routes.cleanings import router as cleanings_router
from app.api.routes.evaluations import router as evaluations_router
from app.api.routes.feed import router as feed_router
from app.api.routes.health import router as health_router
from app.api.routes.mail import router as mail_router
from app.api.routes.offers import router as offers_router
from app.api.routes.profiles import router as profiles_router
from app.api.routes.security_events import router as security_events_router
from app.api.routes.users import router as users_router

router = APIRouter()

router.include_router(cleanings_router, prefix="/cleanings", tags=["cleanings"])
router.include_router(users_router, prefix="/users", tags=["users"])
router.include_router(mail_router, prefix="/users", tags=["users"])
router.include_router(profiles_router, prefix="/profiles", tags=["profiles"])
router.include_router(offers_router, prefix="/cleanings/{cleaning_id}/offers", tags=["offers"])
router.include_router(evaluations_router, prefix="/users/{username}/evaluations", tags=["evaluations"])
router.include_router(feed_router, prefix="/feed", tags=["feed"])
router.include_router(security_events_router, prefix="/security-events", tags=["security"])
router.include_router(health_router, prefix="/health", tags=["health"])
