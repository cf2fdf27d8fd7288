from saexplain.testing import set_offline_env

set_offline_env()  # no network in tests (DESIGN.md section 4)
