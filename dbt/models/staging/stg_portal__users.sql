-- Staff: the key and the role only (no e-mail, no name, no identity-provider subject).
select
    id as user_id,
    role::text as staff_role
from {{ source('portal', 'users') }}
