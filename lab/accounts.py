"""The lab's mail domain, users and LDAP accounts: one set for the single-host servers and the cluster."""

LAB_DOMAIN = "example.org"
USERS = {"user1@example.org": "secret1", "user2@example.org": "secret2"}
LDAP_BASE = "dc=example,dc=org"
LDAP_SERVICE_DN = "uid=kolab-service,ou=Special Users,dc=example,dc=org"
LDAP_SERVICE_PASSWORD = "servicesecret"
LDAP_ADMIN_DN = "cn=admin,dc=example,dc=org"
LDAP_ADMIN_PASSWORD = "adminsecret"
MAIL_UID = 5000  # owner of every mailbox (Dovecot's first_valid_uid)
# Cyrus's admin (imapd.conf "admins"), an LDAP entry under Special Users that logs in through
# saslauthd like every user; "cyrus-admin" is the name Kolab 3 and later give it
CYRUS_ADMIN = "cyrus-admin"
CYRUS_ADMIN_PASSWORD = "cyrusadminsecret"
