//! The SNP secrets page: VMPCKs and the SVSM fields.
