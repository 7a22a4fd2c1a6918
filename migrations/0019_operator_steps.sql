-- 0019_operator_steps: an operator's request for a remediation step
-- (POST /v1/tenants/{id}/actions: reboot, power_cycle, rebuild). The
-- leader's watchdog takes it like one of its own steps — journaled, through
-- the account's rate budget, a rebuild with the copy rules of every rebuild
-- — and clears it when the step is journaled.
ALTER TABLE fleet_status
	ADD COLUMN operator_step text CHECK (operator_step IN ('reboot', 'power_cycle', 'rebuild')),
	ADD COLUMN operator_actor text,
	ADD COLUMN operator_reason text,
	ADD COLUMN operator_requested_at timestamptz;
