"""The built-in `education` connector: school enrolment and daily attendance (chuyên cần)."""
