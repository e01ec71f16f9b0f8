"""TEST DOUBLE of OpenDriveLab/Vista sample_utils.py: present so the checkout looks like Vista's."""
VISTA_TEST_DOUBLE = True
