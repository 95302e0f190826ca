"""The staff portal: one Streamlit app for admins and doctors (`streamlit run dashboards/app.py`).

It writes and reads operational data only through the API, as the signed-in user, and reads
analytics only from the dbt marts through the read-only analyst role.
"""
