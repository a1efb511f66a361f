from service.errors import Conflict, NotFound, Unprocessable


class InvalidCursor(Unprocessable):
    code, title = "invalid_cursor", "Unknown cursor"


class WebhookNotFound(NotFound):
    code, title = "webhook_not_found", "Webhook not found"


class DeliveryNotFound(NotFound):
    code, title = "delivery_not_found", "Delivery not found"


class WebhookDisabled(Conflict):
    code, title = "webhook_disabled", "The webhook is disabled"


class DeliveryInFlight(Conflict):
    code, title = "delivery_in_flight", "The delivery is being sent"
