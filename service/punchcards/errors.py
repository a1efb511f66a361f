from service.errors import Conflict, NotFound, Unprocessable


class PunchProgramNotFound(NotFound):
    code, title = "punch_program_not_found", "Punch-card program not found"


class RewardNotAvailable(Conflict):
    code, title = "reward_not_available", "The punch-card reward is not available"


class NoEligibleItem(Unprocessable):
    code, title = "no_eligible_item", "No item in the basket can be made free by this reward"
