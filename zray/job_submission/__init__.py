"""Jobs (Ray's ``ray.job_submission``): run a driver script on the cluster's head
host, supervised, with its own runtime_env; see docs/jobs.md."""

from zray.job_submission.client import JobSubmissionClient
from zray.job_submission.models import JobDetails, JobInfo, JobStatus

__all__ = ["JobDetails", "JobInfo", "JobStatus", "JobSubmissionClient"]
