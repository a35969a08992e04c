from app.services.authentication import AuthService

auth_service = AuthService()
