from audit_job.cli import main

raise SystemExit(main())
