import Foundation
import Stages

exit(RoleMain.main("connect", CommandLine.arguments))
