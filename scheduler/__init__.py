"""Time: delayed and recurring tasks on rq-scheduler."""
