-- PHI stays in the source: only the key, the owning doctor and when the row was created.
-- Patients without a doctor ordered for themselves (the storefront).
select
    id as patient_id,
    doctor_id,
    doctor_id is null as is_self_registered,
    created_at
from {{ source('portal', 'patients') }}
